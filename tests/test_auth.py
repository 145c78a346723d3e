"""Per-node etcd identities (rule 15), against a real three-member etcd set up as production is:
TLS on the client port with client certificates required (which carry no CN), and auth turned
on by the operator's own command, `ringside auth init`.

Each attack is what a stranger holding one node's files could try: the node's password, for an
eligible node and for an observer. Each must be refused by etcd ("permission denied") and leave
the other nodes' keys as they were. Then the secure setup must also work: sidecars with their
own credentials join, elect, fail over and leave.
"""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import yaml

from sidecar.cli.etcd_access import Access
from sidecar.journal import read_history
from sidecar.keys import Keys
from sidecar.store.codec import b64
from sidecar.store.errors import AuthFailed, LeaseNotFound, StoreError
from sidecar.store.etcd import EtcdStore
from sidecar.store.gateway import EtcdGateway
from sidecar.store.model import KeyValue
from sidecar.testing.localcluster import LocalEtcdCluster, ServerTls
from tests.cli_support import clean_env
from tests.fleet import Fleet
from tests.pki import make_ca, make_cert
from tests.reads import get_one
from tests.waiting import wait_for

pytestmark = pytest.mark.etcd  # these tests start etcd clusters of their own

CLUSTER = "secured"
ELIGIBLE, OTHER, OBSERVER = "node-a", "node-b", "node-c"


def tls_settings(etcd: LocalEtcdCluster) -> dict[str, object]:
    """The `etcd.tls` settings for the cluster's client files; none without TLS."""
    if etcd.tls is None:
        return {}
    files = etcd.tls.client_files
    return {"tls": {"ca": str(files.ca), "cert": str(files.cert), "key": str(files.key)}}


def operator_config(etcd: LocalEtcdCluster) -> Path:
    """A ringside config file with the cluster's TLS client files (the operator's, or a node's)."""
    path = etcd.base_dir / "client.yaml"
    path.write_text(yaml.safe_dump({"etcd": tls_settings(etcd)}))
    return path


def ringside_auth(
    etcd: LocalEtcdCluster, secrets: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        RINGSIDE_CLUSTER=CLUSTER,
        RINGSIDE_ETCD_ENDPOINTS=",".join(etcd.client_urls),
        RINGSIDE_SECRETS_DIR=str(secrets),
        RINGSIDE_CONFIG=str(operator_config(etcd)),
    )
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "auth", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEtcdCluster, Path]]:
    """Three etcd members over TLS with client certificates required, auth enabled by
    `ringside auth init`, and the secrets dir. The client certificate has no CN: etcd's
    gateway refuses one that has, once auth is on."""
    pki = tmp_path_factory.mktemp("pki-rbac")
    ca = make_ca(pki, "ca")
    server = make_cert(pki, ca, "server", "IP:127.0.0.1")
    client = make_cert(pki, ca, "client", "DNS:ringside", subject="/O=ringside")
    tls = ServerTls(ca[0], server[0], server[1], client[0], client[1])
    cluster = LocalEtcdCluster(Path(tmp_path_factory.mktemp("etcd-rbac")), size=3, tls=tls)
    secrets = tmp_path_factory.mktemp("secrets") / "ringside"
    try:
        cluster.start()
        nodes = [f"--node={n}" for n in (ELIGIBLE, OTHER, OBSERVER)]
        done = ringside_auth(cluster, secrets, "init", f"--eligible={ELIGIBLE},{OTHER}", *nodes)
        assert done.returncode == 0, done.stderr
        assert "enabled auth" in done.stdout
        yield cluster, secrets
    finally:
        cluster.close()


def login(etcd: LocalEtcdCluster, secrets: Path, node_id: str) -> EtcdStore:
    password = (secrets / f"{node_id}.password").read_text().strip()
    return etcd.client(username=f"ringside-{CLUSTER}-{node_id}", password=password)


def as_root(etcd: LocalEtcdCluster, secrets: Path) -> EtcdStore:
    return etcd.client(username="root", password=(secrets / "root.password").read_text().strip())


KEYS = Keys(CLUSTER)


@pytest.fixture
async def victim(
    secured: tuple[LocalEtcdCluster, Path],
) -> AsyncIterator[tuple[int, dict[str, KeyValue]]]:
    """The eligible node's keys, written with its own credentials: its lease and what etcd holds."""
    etcd, secrets = secured
    store = login(etcd, secrets, ELIGIBLE)
    try:
        lease = await store.lease_grant(30)
        await store.put(KEYS.member(ELIGIBLE), b'{"node_id": "node-a"}', lease=lease.id)
        await store.put(KEYS.candidate(ELIGIBLE), ELIGIBLE.encode(), lease=lease.id)
        before = {kv.key: kv for kv in (await store.get(KEYS.prefix, prefix=True)).kvs}
        yield lease.id, before
        await store.lease_revoke(lease.id)
    finally:
        await store.close()


def test_init_leaves_private_files_and_is_idempotent(
    secured: tuple[LocalEtcdCluster, Path],
) -> None:
    etcd, secrets = secured
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    files = sorted(p.name for p in secrets.iterdir())
    assert files == [f"{n}.password" for n in (ELIGIBLE, OTHER, OBSERVER)] + ["root.password"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets.iterdir())
    passwords = {p.name: p.read_text() for p in secrets.iterdir()}
    again = ringside_auth(
        etcd,
        secrets,
        "init",
        f"--eligible={ELIGIBLE},{OTHER}",
        *(f"--node={n}" for n in (ELIGIBLE, OTHER, OBSERVER)),
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "unchanged"
    assert {p.name: p.read_text() for p in secrets.iterdir()} == passwords


async def test_without_credentials_etcd_answers_nothing(
    secured: tuple[LocalEtcdCluster, Path],
) -> None:
    etcd, _ = secured
    anonymous = etcd.client()
    try:
        with pytest.raises(AuthFailed):
            await anonymous.get(KEYS.prefix, prefix=True)
    finally:
        await anonymous.close()


def test_show_says_who_can_write_what(secured: tuple[LocalEtcdCluster, Path]) -> None:
    etcd, secrets = secured
    shown = ringside_auth(etcd, secrets, "show", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    users = {u["user"]: u for u in json.loads(shown.stdout)["users"]}
    prefix, history = KEYS.prefix, KEYS.history
    assert users[f"ringside-{CLUSTER}-{ELIGIBLE}"]["permissions"] == [
        f"read {history}*", f"read {prefix}*", f"readwrite {history}{ELIGIBLE}/*",
        f"readwrite {prefix}deposals/{ELIGIBLE}/*", f"readwrite {prefix}election/{ELIGIBLE}",
        f"readwrite {prefix}members/{ELIGIBLE}",
        f"readwrite {prefix}switchover/{ELIGIBLE}",
    ]  # fmt: skip
    assert users[f"ringside-{CLUSTER}-{OBSERVER}"]["permissions"] == [
        f"read {history}*", f"read {prefix}*", f"readwrite {prefix}members/{OBSERVER}",
        f"readwrite {prefix}switchover/{OBSERVER}",
    ]  # fmt: skip
    assert users["root"]["roles"] == ["root"]


ATTACKERS = [OTHER, OBSERVER]  # an eligible node and an observer, each with only its own files


@pytest.mark.parametrize("attacker", ATTACKERS)
@pytest.mark.parametrize(
    "attack",
    [
        "overwrite another node's member record",
        "delete the leader's candidate key",
        "write a candidate key in another node's name",
        "ask for a switchover in another node's name",
        "revoke the leader's lease",
        "write outside the cluster prefix",
        "delete the whole prefix",
        "add an etcd member",
        "remove an etcd member",
        "add an etcd user",
        "turn auth off",
        "grant itself the root role",
        "defragment",
    ],
)
async def test_a_node_cannot(
    secured: tuple[LocalEtcdCluster, Path],
    victim: tuple[int, dict[str, KeyValue]],
    attacker: str,
    attack: str,
) -> None:
    etcd, secrets = secured
    lease, before = victim
    store = login(etcd, secrets, attacker)
    call = store.gateway.call
    own_lease = (await store.lease_grant(10)).id  # allowed: leases need no permission
    attacks: dict[str, Callable[[], Awaitable[object]]] = {
        "overwrite another node's member record": lambda: store.put(
            KEYS.member(ELIGIBLE), b'{"node_id": "node-a", "addresses": ["198.51.100.66"]}'
        ),
        "delete the leader's candidate key": lambda: store.delete(KEYS.candidate(ELIGIBLE)),
        "write a candidate key in another node's name": lambda: store.put(
            KEYS.election + "zz-forged", attacker.encode(), lease=own_lease
        ),
        "ask for a switchover in another node's name": lambda: store.put(
            KEYS.switchover(ELIGIBLE if attacker != ELIGIBLE else OTHER),
            b'{"to": null, "epoch": 1}',
            lease=own_lease,
        ),
        "revoke the leader's lease": lambda: store.lease_revoke(lease),
        "write outside the cluster prefix": lambda: store.put("/elsewhere", b"x"),
        "delete the whole prefix": lambda: store.delete(KEYS.prefix, prefix=True),
        "add an etcd member": lambda: call(
            "/v3/cluster/member/add", {"peerURLs": ["http://127.0.0.1:9"]}
        ),
        "remove an etcd member": lambda: call("/v3/cluster/member/remove", {"ID": "1"}),
        "add an etcd user": lambda: call("/v3/auth/user/add", {"name": "evil", "password": "x"}),
        "turn auth off": lambda: call("/v3/auth/disable", {}),
        "grant itself the root role": lambda: call(
            "/v3/auth/user/grant", {"user": f"ringside-{CLUSTER}-{attacker}", "role": "root"}
        ),
        "defragment": lambda: call("/v3/maintenance/defragment", {}),
    }
    try:
        with pytest.raises(StoreError, match="permission denied"):
            await attacks[attack]()
    finally:
        await store.lease_revoke(own_lease)
        await store.close()
    root = as_root(etcd, secrets)
    try:
        after = {kv.key: kv for kv in (await root.get(KEYS.prefix, prefix=True)).kvs}
        assert {k: (v.value, v.mod_revision) for k, v in after.items() if k in before} == {
            k: (v.value, v.mod_revision) for k, v in before.items()
        }
        assert await get_one(root, "/elsewhere") is None
        assert not any(k.startswith(KEYS.election + "zz") for k in after)
    finally:
        await root.close()


async def test_an_observer_cannot_campaign(secured: tuple[LocalEtcdCluster, Path]) -> None:
    etcd, secrets = secured
    store = login(etcd, secrets, OBSERVER)
    try:
        lease = (await store.lease_grant(10)).id
        await store.put(KEYS.member(OBSERVER), b"{}", lease=lease)  # its own record: allowed
        with pytest.raises(AuthFailed, match="permission denied"):
            await store.put(KEYS.candidate(OBSERVER), OBSERVER.encode(), lease=lease)
        await store.lease_revoke(lease)  # its own lease, its own key on it: allowed
    finally:
        await store.close()


@pytest.mark.parametrize("writer", [OTHER, OBSERVER])
async def test_a_node_writes_only_its_own_part_of_the_history(
    secured: tuple[LocalEtcdCluster, Path], writer: str
) -> None:
    """A candidate writes its own part of the history (only while it leads: its writes are
    fenced by its candidate key), never another's nor the old shared layout (decision 0023);
    a node that can never lead only reads it."""
    etcd, secrets = secured
    store = login(etcd, secrets, writer)
    entry = "00000000000000000001-member_left-node-x"
    try:
        await store.get(KEYS.history, prefix=True)
        for elsewhere in (KEYS.history_of(ELIGIBLE) + entry, KEYS.history + entry):
            with pytest.raises(AuthFailed, match="permission denied"):
                await store.put(elsewhere, b"{}")
            with pytest.raises(AuthFailed, match="permission denied"):
                await store.delete(elsewhere)
        if writer == OBSERVER:
            with pytest.raises(AuthFailed, match="permission denied"):
                await store.put(KEYS.history_of(writer) + entry, b"{}")
        else:
            await store.put(KEYS.history_of(writer) + entry, b"{}")
            assert await store.delete(KEYS.history_of(writer) + entry) == 1
    finally:
        await store.close()


async def test_auth_add_replaces_the_wide_history_grant_of_before(
    secured: tuple[LocalEtcdCluster, Path],
) -> None:
    """Upgrading (decision 0023): an eligible role from before had write access to the whole
    history; `auth add` (as `auth init` run again) takes it back and grants its own part."""
    etcd, secrets = secured
    node, history = "node-old", KEYS.history
    assert ringside_auth(etcd, secrets, "add", node, "--eligible").returncode == 0
    root = as_root(etcd, secrets)
    try:
        wide = {"permType": "READWRITE", "key": b64(history), "range_end": b64(history[:-1] + "0")}
        await root.gateway.call("/v3/auth/role/grant", {"name": f"ringside-{CLUSTER}-{node}",
                                                          "perm": wide})  # fmt: skip
        again = ringside_auth(etcd, secrets, "add", node, "--eligible")
        assert again.returncode == 0, again.stderr
        assert f"revoked readwrite {history}* from" in again.stdout, again.stdout
        store = login(etcd, secrets, node)
        try:
            with pytest.raises(AuthFailed, match="permission denied"):
                await store.put(KEYS.history_of(ELIGIBLE) + "00000000000000000001-x", b"{}")
            await store.put(KEYS.history_of(node) + "00000000000000000001-x", b"{}")
            await store.get(history, prefix=True)
        finally:
            await store.close()
    finally:
        await root.close()


async def test_a_removed_node_is_refused_at_its_next_request(
    secured: tuple[LocalEtcdCluster, Path],
) -> None:
    etcd, secrets = secured
    added = ringside_auth(etcd, secrets, "add", "node-gone")
    assert added.returncode == 0, added.stderr
    store = login(etcd, secrets, "node-gone")
    try:
        await store.get(KEYS.prefix, prefix=True)  # logged in and reading
        removed = ringside_auth(etcd, secrets, "remove", "node-gone")
        assert removed.returncode == 0, removed.stderr
        assert f"deleted user ringside-{CLUSTER}-node-gone" in removed.stdout
        with pytest.raises(AuthFailed):
            await store.get(KEYS.prefix, prefix=True)
    finally:
        await store.close()
    again = ringside_auth(etcd, secrets, "remove", "node-gone")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("unchanged: node-gone is already removed"), again.stdout
    assert again.stdout.count("\n") == 1, again.stdout


async def test_remove_takes_the_nodes_keys_and_leases_at_once(
    secured: tuple[LocalEtcdCluster, Path],
) -> None:
    """Issue 21, as measured: an eligible node's credential granted itself a lease of
    9,000,000,000 s, put its member and candidate keys on it and could keep them alive without
    any permission after `auth remove`; `auth add` then handed out the same password again.
    Now the keys go and the lease is revoked before the command returns, and the old password
    file is set aside, so the node comes back only with a new password."""
    etcd, secrets = secured
    node = "node-rm"
    assert ringside_auth(etcd, secrets, "add", node, "--eligible").returncode == 0
    old = (secrets / f"{node}.password").read_text()
    store = login(etcd, secrets, node)
    root = as_root(etcd, secrets)
    neighbour = KEYS.member(node + "x")  # named like it, and not its own
    try:
        lease = (await store.lease_grant(9_000_000_000)).id  # etcd's longest
        await store.put(KEYS.member(node), b'{"node_id": "node-rm"}', lease=lease)
        await store.put(KEYS.candidate(node), node.encode(), lease=lease)
        await store.put(KEYS.switchover(node), b'{"to": null, "epoch": 1}')  # no lease at all
        await root.put(neighbour, b"{}")
        removed = ringside_auth(etcd, secrets, "remove", node)
        assert removed.returncode == 0, removed.stderr
        mine = [kv.key for kv in (await root.get(KEYS.prefix, prefix=True)).kvs]
        assert [key for key in mine if key.split("/")[-1] == node] == []
        assert neighbour in mine
        with pytest.raises(LeaseNotFound):
            await root.lease_time_to_live(lease)
        lines = removed.stdout.splitlines()
        assert f"deleted user ringside-{CLUSTER}-{node}" in lines
        assert f"revoked lease {lease:x}, deleting {KEYS.candidate(node)}, {KEYS.member(node)}" in (
            lines
        )
        assert f"deleted {KEYS.switchover(node)}" in lines
        aside = list(secrets.glob(f"{node}.password.removed-*"))
        assert [p.read_text() for p in aside] == [old]
        assert stat.S_IMODE(aside[0].stat().st_mode) == 0o600
        assert any(line.startswith(f"moved {secrets / node}.password aside") for line in lines)
        with pytest.raises(AuthFailed):  # and it cannot put anything back
            await store.put(KEYS.member(node), b"{}")
        added = ringside_auth(etcd, secrets, "add", node, "--eligible")
        assert added.returncode == 0, added.stderr
        new = (secrets / f"{node}.password").read_text()
        assert new.strip()
        assert new != old
        assert stat.S_IMODE((secrets / f"{node}.password").stat().st_mode) == 0o600
        back = login(etcd, secrets, node)  # the new password is the one etcd knows
        try:
            await back.put(KEYS.member(node), b"{}")
        finally:
            await back.delete(KEYS.member(node))
            await back.close()
    finally:
        await store.close()
        await root.delete(neighbour)
        await root.close()
        ringside_auth(etcd, secrets, "remove", node)


@pytest.mark.parametrize(
    ("key", "owned"),
    [
        (KEYS.member("node-rm"), True),
        (KEYS.candidate("node-rm"), True),
        (KEYS.switchover("node-rm"), True),
        (KEYS.prefix + "deposals/node-rm/node-a", True),  # written by it, about node-a
        (KEYS.prefix + "deposals/node-a/node-rm", False),  # written by node-a, about it
        (KEYS.member("node-rmx"), False),
        (KEYS.election + "694d7f3a1b2c", False),  # a 0.1 candidate, named by its lease
        (f"/ringside/{CLUSTER}x/members/node-rm", False),  # another cluster's
        (KEYS.history + "node-rm", False),
    ],
)
def test_the_keys_remove_counts_as_a_nodes_own(key: str, owned: bool) -> None:
    """A node's own keys are named by it right after their kind (`<kind>/<node_id>...`)."""
    access = Access(cast(EtcdGateway, None), KEYS)  # naming only: no call is made
    assert access.owns("node-rm", key) is owned


async def test_rotate_replaces_the_password(secured: tuple[LocalEtcdCluster, Path]) -> None:
    etcd, secrets = secured
    assert ringside_auth(etcd, secrets, "add", "node-rot").returncode == 0
    old = (secrets / "node-rot.password").read_text().strip()
    stale = etcd.client(username=f"ringside-{CLUSTER}-node-rot", password=old)
    await stale.get(KEYS.prefix, prefix=True)  # logged in: holds a token from before
    rotated = ringside_auth(etcd, secrets, "rotate", "node-rot")
    assert rotated.returncode == 0, rotated.stderr
    new = (secrets / "node-rot.password").read_text().strip()
    assert new != old
    assert stat.S_IMODE((secrets / "node-rot.password").stat().st_mode) == 0o600
    fresh = login(etcd, secrets, "node-rot")
    try:
        with pytest.raises(AuthFailed):  # its token died with the old password
            await stale.get(KEYS.prefix, prefix=True)
        await fresh.get(KEYS.prefix, prefix=True)
    finally:
        await stale.close()
        await fresh.close()


def test_a_wrong_root_password_is_one_line_and_exit_1(
    secured: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    etcd, _ = secured
    wrong = tmp_path / "secrets"
    wrong.mkdir(mode=0o700)
    (wrong / "root.password").write_text("not-the-password\n")
    result = ringside_auth(etcd, wrong, "show")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ringside: etcd refused:"), result.stderr


async def test_sidecars_with_their_own_credentials_elect_and_fail_over(
    secured: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    etcd, secrets = secured
    fleet = Fleet(etcd, tmp_path, lease_ttl=3)
    fleet.cluster = CLUSTER

    def credentials(node_id: str) -> dict[str, object]:
        return {
            "etcd": {
                "username": f"ringside-{CLUSTER}-{node_id}",
                "password_file": str(secrets / f"{node_id}.password"),
                **tls_settings(etcd),
            }
        }

    try:
        for node_id in (ELIGIBLE, OTHER):
            fleet.add(node_id, settings=credentials(node_id))
        # Only its password file: the sidecar logs in as its own user, ringside-<cluster>-<id>.
        password_only = {
            "etcd": {"password_file": str(secrets / f"{OBSERVER}.password"), **tls_settings(etcd)}
        }
        fleet.add(OBSERVER, eligible=False, settings=password_only)
        everyone = [ELIGIBLE, OTHER, OBSERVER]
        first = await fleet.wait_converged(everyone, within_s=20, leader_among=[ELIGIBLE, OTHER])
        leader = fleet.sidecars[first["node_id"]]
        leader.signal(signal.SIGTERM)
        assert leader.wait_exit(10) == 0
        rest = [n for n in everyone if n != first["node_id"]]
        second = await fleet.wait_converged(rest, within_s=20, leader_among=[ELIGIBLE, OTHER])
        assert second["node_id"] != first["node_id"]
        assert second["epoch"] > first["epoch"]
        root = as_root(etcd, secrets)
        try:  # the new leader, with its own credentials, recorded the stop in the history

            async def recorded() -> bool:
                found = await read_history(root, KEYS)
                return any(
                    e.kind == "member_left" and e.detail.get("node_id") == first["node_id"]
                    for e in found
                )

            await wait_for(recorded, 10, what="the stop was not recorded in the history")
        finally:
            await root.close()
        for node_id in rest:  # they leave: each revokes its own lease, keys and all
            fleet.sidecars[node_id].signal(signal.SIGTERM)
            assert fleet.sidecars[node_id].wait_exit(10) == 0
    finally:
        await fleet.close()
    root = as_root(etcd, secrets)
    try:
        left = (await root.get(KEYS.members, prefix=True)).kvs
        assert [kv.key for kv in left] == []
    finally:
        await root.close()


@pytest.mark.parametrize(("node_id", "exit_code"), [(OBSERVER, 0), (None, 2)])
def test_commands_with_a_password_file_log_in_as_the_node(
    secured: tuple[LocalEtcdCluster, Path], node_id: str | None, exit_code: int
) -> None:
    """`ringside etcd` and `status --etcd` with a node's settings: its own user by default;
    without a node id there is no user to pick, and that is one line, exit 2."""
    etcd, secrets = secured
    env = clean_env(
        RINGSIDE_CLUSTER=CLUSTER,
        RINGSIDE_ETCD_ENDPOINTS=",".join(etcd.client_urls),
        RINGSIDE_ETCD_PASSWORD_FILE=str(secrets / f"{OBSERVER}.password"),
        RINGSIDE_CONFIG=str(operator_config(etcd)),
        **({"RINGSIDE_NODE_ID": node_id} if node_id else {"RINGSIDE_NODE_ID": "Not A Node!"}),
    )

    def ringside(*command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sidecar", *command],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    checked = ringside("etcd")
    status = ringside("status", "--etcd", ",".join(etcd.client_urls), "-o", "json")
    assert checked.returncode == exit_code, checked
    if exit_code == 0:
        assert "quorum: ok (read at revision" in checked.stdout, checked.stdout
        assert json.loads(status.stdout)["quorum_ok"] is True  # it read the prefix
        return
    for done in (checked, status):
        assert done.returncode == 2, done
        assert done.stderr.startswith("ringside: error: no etcd.username, and no node id"), (
            done.stderr
        )
        assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("show",), "etcd auth is not enabled yet: run `ringside auth init` first"),
        (("add", "not a node!"), "'not a node!' is not a node id"),
        (("init", "--eligible=a", "--node=b"), "--eligible names nodes that get no user: a"),
    ],
)
def test_operator_mistakes_are_one_line_and_exit_2(
    etcd: LocalEtcdCluster, tmp_path: Path, args: tuple[str, ...], text: str
) -> None:
    secrets = tmp_path / "secrets"
    result = ringside_auth(etcd, secrets, *args)  # the shared etcd: auth is off there
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert text in result.stderr, result.stderr


def test_a_secrets_dir_others_can_read_is_refused(etcd: LocalEtcdCluster, tmp_path: Path) -> None:
    secrets = tmp_path / "open"
    secrets.mkdir(mode=0o755)
    secrets.chmod(0o755)
    result = ringside_auth(etcd, secrets, "init", "--eligible=a", "--node=a")
    assert result.returncode == 2, result
    assert "is readable by others: chmod 700 it first" in result.stderr
    assert list(secrets.iterdir()) == []  # nothing written there


async def test_over_tls_with_auth_sidecars_elect_and_another_node_is_refused(
    secured: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    etcd, secrets = secured
    assert etcd.client_urls[0].startswith("https://")
    attacker = login(etcd, secrets, OBSERVER)  # over TLS (the cluster's client files)
    try:
        with pytest.raises(AuthFailed, match="permission denied"):
            await attacker.put(KEYS.member(ELIGIBLE), b"{}")
    finally:
        await attacker.close()
    fleet = Fleet(etcd, tmp_path, lease_ttl=3)
    fleet.cluster = CLUSTER
    try:
        for node_id in (ELIGIBLE, OTHER, OBSERVER):
            settings: dict[str, object] = {
                "etcd": {
                    "username": f"ringside-{CLUSTER}-{node_id}",
                    "password_file": str(secrets / f"{node_id}.password"),
                    **tls_settings(etcd),
                }
            }
            fleet.add(node_id, eligible=node_id != OBSERVER, settings=settings)
        first = await fleet.wait_converged(
            [ELIGIBLE, OTHER, OBSERVER], within_s=20, leader_among=[ELIGIBLE, OTHER]
        )
        leader = fleet.sidecars[first["node_id"]]
        leader.signal(signal.SIGTERM)
        assert leader.wait_exit(10) == 0
        rest = [n for n in (ELIGIBLE, OTHER, OBSERVER) if n != first["node_id"]]
        second = await fleet.wait_converged(rest, within_s=20, leader_among=[ELIGIBLE, OTHER])
        assert second["epoch"] > first["epoch"]
    finally:
        await fleet.close()


DOCTOR_CASES = {
    "own-keys": (ELIGIBLE, None, True, "ok", rf"may write {KEYS.candidate(ELIGIBLE)}"),
    "observer-asked-to-campaign": (
        OBSERVER, None, True, "fail", rf"may not write {KEYS.candidate(OBSERVER)}"
    ),
    "wrong-password": (
        ELIGIBLE, "not-the-password", True, "fail", "refused the login as .*wrong password"
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", DOCTOR_CASES.values(), ids=DOCTOR_CASES.keys())
def test_doctor_checks_the_login_and_the_nodes_rights(
    secured: tuple[LocalEtcdCluster, Path],
    tmp_path: Path,
    case: tuple[str, str | None, bool, str, str],
) -> None:
    node_id, password, eligible, level, pattern = case
    etcd, secrets = secured
    password_file = secrets / f"{node_id}.password"
    if password is not None:
        password_file = tmp_path / "wrong.password"
        password_file.write_text(password)
        password_file.chmod(0o600)
    config = tmp_path / "node.yaml"
    etcd_settings = {**tls_settings(etcd), "password_file": str(password_file)}
    config.write_text(yaml.safe_dump({"etcd": etcd_settings, "leader": {"eligible": eligible}}))
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "doctor", "-o", "json"],
        capture_output=True, text=True, check=False, timeout=60,
        env=clean_env(
            RINGSIDE_CONFIG=str(config), RINGSIDE_CLUSTER=CLUSTER, RINGSIDE_NODE_ID=node_id,
            RINGSIDE_ETCD_ENDPOINTS=",".join(etcd.client_urls),
            RINGSIDE_LOCK_FILE=str(tmp_path / "node.lock"),
        ),
    )  # fmt: skip
    assert result.returncode == (0 if level == "ok" else 1), result.stdout + result.stderr
    access = next(s for s in json.loads(result.stdout)["sections"] if s["title"] == "etcd access")
    assert any(f["level"] == level and re.search(pattern, f["text"]) for f in access["findings"]), (
        access
    )
