"""compose/local-cluster.yml end to end: real containers, a real bridge network, real failures.

One project (three etcd members over TLS with auth on, one etcd user per sidecar, five
sidecars, lease TTL 5 s) serves the module; each test
starts from it healed and converged, and runs under `tests.fleet.InvariantChecker` (at most one
leader per epoch, epochs only increase, no claim without validity). The last test takes the
project down and checks that nothing of it is left. Run by `make test-compose` (which starts
dockerd and builds the images); `make test` deselects the `compose` marker.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from sidecar import __version__
from tests.compose.cluster import ELIGIBLE, ETCD_MEMBERS, NODES, ComposeFleet, ComposeProject
from tests.fleet import InvariantChecker

pytestmark = [pytest.mark.compose, pytest.mark.timeout(300)]

TTL = 5
STARTUP_S = 90  # first start of the project: etcd bootstrap, health checks, registration


def phase(name: str, started: float) -> None:
    print(f"\n  [compose] {name}: {time.monotonic() - started:.1f} s", flush=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeProject]:
    variables = {
        "RINGSIDE_LEASE_TTL": str(TTL),
        "RINGSIDE_IMAGE": os.environ.get("RINGSIDE_IMAGE", f"ringside:{__version__}"),
    }
    state = tmp_path_factory.mktemp("compose-state")
    compose = ComposeProject(f"ringsidetest{os.getpid()}", variables, state)
    started = time.monotonic()
    try:
        compose.setup()
        phase("setup.sh", started)
        compose.up()
        phase("up", started)
        yield compose
    finally:
        compose.down()


@pytest.fixture
async def fleet(project: ComposeProject) -> AsyncIterator[ComposeFleet]:
    group = ComposeFleet(project)
    try:
        started = time.monotonic()
        await group.heal()
        await group.wait_ready(within_s=STARTUP_S)
        await group.wait_converged(NODES, within_s=3 * TTL, leader_among=ELIGIBLE)
        phase("ready and converged", started)
        yield group
    finally:
        await group.close()


async def test_killed_leader_container_is_replaced_with_a_higher_epoch(
    fleet: ComposeFleet,
) -> None:
    async with InvariantChecker(fleet) as checker:
        before = await fleet.wait_converged(NODES, within_s=5, leader_among=ELIGIBLE)
        leader = fleet.sidecars[before["node_id"]]
        await checker.wait_claim(before["epoch"])

        await fleet.kill(leader)
        killed_at = time.monotonic()
        others = set(NODES) - {leader.node_id}
        after = await fleet.wait_converged(others, within_s=TTL + 2, leader_among=ELIGIBLE)
        phase("killed leader replaced", killed_at)
        assert after["epoch"] > before["epoch"]
        await checker.wait_claim(after["epoch"])

        await fleet.start(leader)
        started = time.monotonic()
        await fleet.wait_converged(NODES, within_s=3 * TTL, leader_among=[after["node_id"]])
        phase("restarted container rejoined", started)
    assert checker.claimed_by(leader.node_id) == [before["epoch"]]


async def test_killed_container_started_again_at_once_waits_out_its_old_registration(
    fleet: ComposeFleet,
) -> None:
    """The restarted sidecar is pid 1 in the same container (same hostname) as the one that
    died: its old record must be recognised as a dead predecessor's, not a duplicate node."""
    async with InvariantChecker(fleet):
        before = await fleet.wait_converged(NODES, within_s=5, leader_among=ELIGIBLE)
        follower = fleet.sidecars["lambda-gh200-3"]
        await fleet.kill(follower)
        await fleet.start(follower)
        started = time.monotonic()
        # Its old record stays listed until that lease expires: only /ready says it registered.
        await fleet.wait_all(
            [follower], "/ready", "the restarted sidecar registers", within_s=TTL + 3,
            check=lambda answer: answer["ready"] is True,
        )  # fmt: skip
        phase("killed and restarted at once: registered again", started)
        await fleet.wait_converged(NODES, within_s=5, leader_among=[before["node_id"]])


async def test_sidecars_stopped_together_exit_0_promptly_and_start_again(
    fleet: ComposeFleet,
) -> None:
    """SIGTERM to every sidecar at once (the leader among them): each hands over, revokes its
    lease and exits 0 well within its stop grace period, as pid 1 of its container."""
    sidecars = list(fleet.sidecars.values())
    async with InvariantChecker(fleet):
        await fleet.wait_converged(NODES, within_s=5, leader_among=ELIGIBLE)
        started = time.monotonic()
        await asyncio.gather(*(fleet.stop(s) for s in sidecars))
        phase("all sidecars stopped", started)
        exit_codes = {s.node_id: s.container.attrs["State"]["ExitCode"] for s in sidecars}
        assert exit_codes == dict.fromkeys(NODES, 0)
        assert time.monotonic() - started < 4

        await asyncio.gather(*(fleet.start(s) for s in sidecars))
        started = time.monotonic()
        await fleet.wait_converged(NODES, within_s=3 * TTL, leader_among=ELIGIBLE)
        phase("all sidecars started again", started)


async def test_disconnected_leader_steps_down_leaves_and_rejoins(fleet: ComposeFleet) -> None:
    async with InvariantChecker(fleet) as checker:
        before = await fleet.wait_converged(NODES, within_s=5, leader_among=ELIGIBLE)
        leader = fleet.sidecars[before["node_id"]]
        await checker.wait_claim(before["epoch"])

        await fleet.disconnect(leader)
        cut_at = time.monotonic()
        # Asked from inside its container: it stops claiming before its lease can expire.
        await fleet.wait_all(
            [leader], "/v1/leader", "the cut-off leader stops claiming", within_s=TTL,
            check=lambda answer: answer["is_self"] is False,
        )  # fmt: skip
        phase("cut-off leader stopped claiming", cut_at)
        # The checker kept asking it (from inside) while it was cut off: whatever it answered
        # then, claims included, went through the invariant checks. (It may stop claiming
        # within a fraction of a second of the cut, before a `docker exec` poll comes round.)
        assert any(n == leader.node_id and sent > cut_at for n, sent in checker.answered)
        others = set(NODES) - {leader.node_id}
        after = await fleet.wait_converged(others, within_s=TTL + 2, leader_among=ELIGIBLE)
        phase("cut-off leader left the others' views", cut_at)
        assert after["epoch"] > before["epoch"]
        await checker.wait_claim(after["epoch"])

        await fleet.connect(leader)
        back_at = time.monotonic()
        await fleet.wait_converged(NODES, within_s=3 * TTL, leader_among=[after["node_id"]])
        phase("reconnected sidecar rejoined", back_at)
    assert checker.claimed_by(leader.node_id) == [before["epoch"]]


async def test_etcd_losing_one_member_changes_nothing_and_losing_two_stops_leading(
    fleet: ComposeFleet,
) -> None:
    everyone = list(fleet.sidecars.values())
    async with InvariantChecker(fleet) as checker:
        before = await fleet.wait_converged(NODES, within_s=5, leader_among=ELIGIBLE)
        await checker.wait_claim(before["epoch"])
        raft_leader = await fleet.etcd_raft_leader()
        followers = [m for m in ("etcd1", "etcd2", "etcd3") if m != raft_leader]

        await fleet.kill_etcd(followers[0])
        killed_at = time.monotonic()
        await fleet.wait_all(
            everyone, "/v1/status", "2 of 3 voters healthy, quorum ok", within_s=10,
            check=lambda st: st["quorum_ok"] is True and st["voters"]["healthy"] == 2,
        )  # fmt: skip
        phase("one etcd member down seen by every sidecar", killed_at)
        same = await fleet.wait_converged(NODES, within_s=5, leader_among=[before["node_id"]])
        assert same["epoch"] == before["epoch"]  # no leader change
        assert checker.epochs() == [before["epoch"]]  # not even for a moment

        await fleet.kill_etcd(followers[1])
        lost_at = time.monotonic()
        await fleet.wait_all(
            everyone, "/v1/leader", "nobody claims leadership without quorum",
            within_s=TTL + 3, check=lambda answer: answer["is_self"] is False,
        )  # fmt: skip
        phase("quorum lost: nobody leads", lost_at)
        await fleet.wait_all(
            everyone, "/v1/status", "every sidecar reports quorum_ok false",
            within_s=TTL + 3, check=lambda st: st["quorum_ok"] is False,
        )  # fmt: skip
        phase("quorum lost: reported by every sidecar", lost_at)

        for member in followers:
            await fleet.start_etcd(member)
        back_at = time.monotonic()
        after = await fleet.wait_converged(NODES, within_s=4 * TTL, leader_among=ELIGIBLE)
        phase("etcd members back: one leader, everyone registered", back_at)
        assert after["epoch"] >= before["epoch"]
        await fleet.wait_all(
            everyone, "/v1/status", "every sidecar reports 3 healthy voters again", within_s=10,
            check=lambda st: st["quorum_ok"] is True and st["voters"]["healthy"] == 3,
        )  # fmt: skip
        phase("etcd members back: quorum reported by every sidecar", back_at)


async def test_etcd_wants_a_user_and_each_sidecar_runs_unprivileged_with_its_own_secret(
    fleet: ComposeFleet,
) -> None:
    """What the tests above ran on is the secure setup, not a relaxed one: etcd refuses a
    request that carries a valid client certificate but no user, and every sidecar runs as
    uid 10001 on a read-only root, without capabilities, holding only its own password."""
    project = fleet.project
    async with aiohttp.ClientSession() as session:
        for member in ETCD_MEMBERS:
            container = await asyncio.to_thread(project.container, member)
            address = container.attrs["NetworkSettings"]["Networks"][fleet.network.name]
            url = f"https://{address['IPAddress']}:2379/v3/kv/range"
            body = {"key": base64.b64encode(b"/ringside/").decode()}
            async with session.post(url, json=body, ssl=project.etcd_client_tls()) as answer:
                refusal = await answer.json()
            assert "user name is empty" in str(refusal.get("error")), (member, refusal)

    for sidecar in fleet.sidecars.values():
        container = sidecar.container
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True, sidecar.node_id
        assert host["CapDrop"] == ["ALL"], sidecar.node_id
        assert "no-new-privileges:true" in host["SecurityOpt"], sidecar.node_id
        script = "import os; print(os.getuid(), sorted(os.listdir('/run/secrets')))"
        exit_code, output = container.exec_run(["python3", "-c", script])
        assert exit_code == 0, output
        assert isinstance(output, bytes)
        assert output.decode().split(None, 1) == ["10001", "['etcd.password']\n"]
        written = project.state / "secrets" / f"{sidecar.node_id}.password"
        exit_code, secret = container.exec_run(["cat", "/run/secrets/etcd.password"])
        assert isinstance(secret, bytes)
        assert secret.strip() == written.read_bytes().strip(), sidecar.node_id


def test_down_removes_every_container_network_and_volume(project: ComposeProject) -> None:
    assert project.leftovers().keys() == {"containers", "networks", "volumes"}
    started = time.monotonic()
    project.down()
    phase("down -v", started)
    assert project.leftovers() == {}
