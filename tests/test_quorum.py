"""Quorum health (rule 8) and history guard (rule 7): scripted answers, then real etcd failures.

The scripted store pins the counting rule down exactly; the real cluster shows what etcd
itself reports while members are killed or paused. Tests that hurt members use the `etcd`
fixture, which heals the cluster afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sidecar.history import HistoryGuard
from sidecar.quorum import QuorumHealth, QuorumMonitor, check_quorum
from sidecar.store.errors import AuthFailed, StoreUnavailable
from sidecar.store.etcd import EtcdStore
from sidecar.store.memory import MemoryStore
from sidecar.store.model import EndpointState, EndpointStatus, Header, StoreMember
from sidecar.testing.localcluster import EtcdMember, LocalEtcdCluster, find_etcd, free_port
from tests.waiting import wait_for

REQUEST_TIMEOUT_S = 1.5
CLUSTER_ID = 0xC1
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens there


# --- the counting rule, on scripted answers ------------------------------------------------


def url_of(member_id: int) -> str:
    return f"http://voter{member_id}:2379"


def voter(member_id: int) -> StoreMember:
    return StoreMember(member_id, f"v{member_id}", (), (url_of(member_id),))


def status(member_id: int, leader: int, term: int = 5) -> EndpointStatus:
    header = Header(CLUSTER_ID, member_id, 100, term)
    return EndpointStatus(url_of(member_id), header, "3.4.23", leader, term, 100, 1)


class ScriptedStore(MemoryStore):
    """A cluster whose member list and status answers a test writes down; None: no answer.
    With `root_only_status`, the status call is refused as etcd >= 3.5.28 refuses a non-root
    user, and only a read of a probe key answers (with the member's header)."""

    def __init__(
        self,
        voters: int,
        answers: dict[str, EndpointStatus | None],
        endpoints: tuple[str, ...] | None = None,
        *,
        root_only_status: bool = False,
    ) -> None:
        self.root_only_status = root_only_status
        super().__init__()
        self.voters = tuple(voter(i) for i in range(1, voters + 1))
        self.answers = answers
        self.endpoints = endpoints if endpoints is not None else tuple(answers)
        self.asked: list[str] = []

    async def members(self) -> tuple[StoreMember, ...]:
        return self.voters

    async def endpoint_status(
        self, endpoint: str, *, probe_key: str | None = None
    ) -> EndpointStatus:
        self.asked.append(endpoint)
        answer = self.answers.get(endpoint)
        if answer is None:
            raise StoreUnavailable(f"{endpoint}: connection refused")
        if self.root_only_status:
            if probe_key is None:
                raise AuthFailed("etcdserver: permission denied")
            answer = dataclasses.replace(answer, version="", leader=None, raft_index=0, db_size=0)
        return dataclasses.replace(answer, endpoint=endpoint)  # as etcd's: the URL asked

    def endpoint_states(self) -> tuple[EndpointState, ...]:
        return tuple(
            EndpointState(url, reachable=self.answers.get(url) is not None)
            for url in self.endpoints
        )


def following(leader: int, *ids: int) -> dict[str, EndpointStatus | None]:
    return {url_of(i): status(i, leader) for i in ids}


async def test_memory_store_is_one_healthy_voter_that_leads() -> None:
    store = MemoryStore()
    health = await check_quorum(store)
    assert (health.voters_total, health.voters_healthy, health.quorum_ok) == (1, 1, True)
    assert health.connection == "connected"
    assert health.etcd_leader == "memory"
    assert health.voters[0].is_raft_leader
    assert health.cluster_id == store.cluster_id
    assert health.error is None


async def test_where_etcd_tells_its_status_to_root_only_a_read_through_each_voter_counts() -> None:
    """etcd >= 3.5.28 refuses maintenance status to a node's user: without a probe key every
    voter would look down, and every sidecar would report a quorum loss that is not there."""
    answers = following(1, 1, 2)  # voter 3 does not answer at all
    store = ScriptedStore(3, answers, root_only_status=True)
    blind = await check_quorum(store)
    assert (blind.voters_healthy, blind.quorum_ok) == (0, False)
    assert "permission denied" in str(blind.error)
    health = await check_quorum(store, probe_key="/ringside/c/")
    assert (health.voters_total, health.voters_healthy, health.quorum_ok) == (3, 2, True)
    assert health.etcd_leader is None  # nobody told who leads Raft: not guessed
    assert [v.healthy for v in health.voters] == [True, True, False]
    assert health.raft_term == 5


async def test_a_voter_counts_only_while_it_follows_a_member() -> None:
    answers = following(2, 1, 2) | {url_of(3): status(3, 0), url_of(4): status(4, 99)}
    endpoints = tuple(url_of(i) for i in range(1, 6))
    health = await check_quorum(ScriptedStore(5, answers, endpoints))
    by_name = {v.name: v for v in health.voters}
    assert [v.healthy for v in health.voters] == [True, True, False, False, False]
    assert by_name["v3"].error is not None
    assert "no Raft leader" in by_name["v3"].error
    assert by_name["v4"].error is not None
    assert "not a member" in by_name["v4"].error
    assert by_name["v5"].error is not None
    assert "connection refused" in by_name["v5"].error
    assert by_name["v5"].raft_term is None
    assert by_name["v2"].is_raft_leader
    assert not by_name["v1"].is_raft_leader
    # 2 of 5 is no quorum, and without quorum nobody is named leader.
    assert health.quorum_ok is False
    assert health.etcd_leader is None
    assert health.error is not None
    assert "v5 does not answer" in health.error
    assert health.connection == "degraded"


@pytest.mark.parametrize(
    ("voters", "healthy", "quorum_ok"),
    [(1, 1, True), (2, 1, False), (3, 1, False), (3, 2, True), (4, 2, False), (5, 3, True)],
)
async def test_quorum_is_a_strict_majority(voters: int, healthy: int, quorum_ok: bool) -> None:
    answers = following(1, *range(1, healthy + 1))
    endpoints = tuple(url_of(i) for i in range(1, voters + 1))
    health = await check_quorum(ScriptedStore(voters, answers, endpoints))
    assert (health.voters_total, health.voters_healthy) == (voters, healthy)
    assert health.quorum_ok is quorum_ok
    assert health.etcd_leader == ("v1" if quorum_ok else None)


async def test_the_leader_is_the_one_most_healthy_voters_follow() -> None:
    answers = following(3, 1, 3) | {url_of(2): status(2, 1, term=4)}
    health = await check_quorum(ScriptedStore(3, answers))
    assert health.voters_healthy == 3
    assert health.etcd_leader == "v3"
    assert health.raft_term == 5


async def test_an_answer_counts_for_the_member_that_gave_it_whatever_the_url() -> None:
    """The voter's advertised URL is dead from here; a configured endpoint reaches it."""
    public = "https://203.0.113.21:2379"
    answers = following(1, 2, 3) | {public: status(1, 1)}
    store = ScriptedStore(3, answers, endpoints=(public, url_of(2), url_of(3)))
    health = await check_quorum(store)
    assert health.voters_healthy == 3
    assert health.connection == "connected"
    assert sorted(store.asked) == sorted([public, url_of(1), url_of(2), url_of(3)])


async def test_no_member_list_means_no_quorum_and_says_why() -> None:
    store = EtcdStore.connect([UNREACHABLE], request_timeout=REQUEST_TIMEOUT_S)
    try:
        health = await check_quorum(store)
    finally:
        await store.close()
    assert health.quorum_ok is False
    assert health.connection == "partitioned"
    assert health.voters == ()
    assert health.error is not None
    assert health.error.startswith("cannot list etcd members")


def test_unknown_is_no_quorum() -> None:
    health = QuorumHealth.unknown()
    assert (health.quorum_ok, health.connection, health.etcd_leader) == (
        False,
        "partitioned",
        None,
    )
    assert health.error == "not checked yet"
    assert health.summary.startswith("NO quorum: 0 of 0")


# --- real etcd -----------------------------------------------------------------------------


@pytest.fixture
async def client(etcd_cluster: LocalEtcdCluster) -> AsyncIterator[EtcdStore]:
    """A client configured with all three members."""
    store = etcd_cluster.client(request_timeout=REQUEST_TIMEOUT_S)
    yield store
    await store.close()


async def test_all_voters_up(etcd_cluster: LocalEtcdCluster, client: EtcdStore) -> None:
    health = await check_quorum(client)
    assert (health.voters_total, health.voters_healthy, health.quorum_ok) == (3, 3, True)
    assert health.etcd_leader == etcd_cluster.leader().name
    assert health.connection == "connected"
    assert [v.name for v in health.voters if v.is_raft_leader] == [health.etcd_leader]
    assert health.summary.startswith("quorum ok: 3 of 3 etcd voters healthy, leader")
    read = await client.get("/quorum/probe")
    assert health.cluster_id == read.header.cluster_id
    assert health.raft_term == read.header.raft_term


async def test_one_voter_killed(etcd: LocalEtcdCluster, client: EtcdStore) -> None:
    leader = etcd.leader()
    victim = etcd.followers()[0]
    victim.kill()
    health = await check_quorum(client)
    assert (health.voters_healthy, health.quorum_ok) == (2, True)
    assert health.connection == "degraded"
    assert health.etcd_leader == leader.name
    dead = next(v for v in health.voters if v.name == victim.name)
    assert not dead.healthy
    assert dead.error is not None
    assert victim.client_url in dead.error


async def test_a_new_leader_is_named_after_the_leader_is_killed(
    etcd: LocalEtcdCluster, client: EtcdStore
) -> None:
    old = etcd.leader()
    old.kill()
    latest = QuorumHealth.unknown()

    async def new_leader() -> bool:
        nonlocal latest
        latest = await check_quorum(client)
        return latest.quorum_ok and latest.etcd_leader not in (None, old.name)

    await wait_for(new_leader, within_s=10)
    assert latest.voters_healthy == 2
    assert latest.etcd_leader == etcd.leader().name


async def test_two_voters_killed_is_no_quorum(etcd: LocalEtcdCluster, client: EtcdStore) -> None:
    survivor = etcd.members[2]
    etcd.members[0].kill()
    etcd.members[1].kill()
    latest = QuorumHealth.unknown()

    async def check(condition: Callable[[QuorumHealth], bool]) -> bool:
        nonlocal latest
        latest = await check_quorum(client)
        return condition(latest)

    await wait_for(lambda: check(lambda h: not h.quorum_ok), within_s=10)
    assert latest.etcd_leader is None
    assert latest.connection == "degraded"
    assert latest.voters_total == 3
    # Within an election timeout the survivor itself stops following any leader.
    await wait_for(lambda: check(lambda h: h.voters_healthy == 0), within_s=10)
    alone = next(v for v in latest.voters if v.name == survivor.name)
    assert alone.raft_term is not None
    assert alone.error is not None
    assert "no Raft leader" in alone.error


@pytest.mark.etcd  # starts a cluster of its own
async def test_a_learner_is_listed_but_never_counted_as_a_voter(tmp_path: Path) -> None:
    """etcd 3.4+ learners get the log without a vote; counting one would let 2 of 4 "voters"
    look like a quorum when only 1 of 3 real voters answers. A cluster of its own, since
    adding a member changes the cluster for good."""
    with LocalEtcdCluster(tmp_path / "etcd") as cluster:
        store = cluster.client(request_timeout=REQUEST_TIMEOUT_S)
        learner = EtcdMember("learner", free_port(), free_port(), tmp_path / "etcd" / "l.data")
        try:

            async def add_learner() -> bool:
                # etcd refuses to reconfigure until every member has been connected for 5 s.
                try:
                    await store.gateway.call(
                        "/v3/cluster/member/add",
                        {"peerURLs": [learner.peer_url], "isLearner": True},
                    )
                except StoreUnavailable as e:
                    if "unhealthy cluster" not in str(e):
                        raise
                    return False
                return True

            await wait_for(add_learner, within_s=15)
            everyone = ",".join(f"{m.name}={m.peer_url}" for m in [*cluster.members, learner])
            learner.args = [
                find_etcd(), "--name=learner", f"--data-dir={learner.data_dir}",
                f"--listen-client-urls={learner.client_url}",
                f"--advertise-client-urls={learner.client_url}",
                f"--listen-peer-urls={learner.peer_url}",
                f"--initial-advertise-peer-urls={learner.peer_url}",
                f"--initial-cluster={everyone}", "--initial-cluster-state=existing",
                "--logger=zap", "--log-level=warn",
            ]  # fmt: skip
            learner.start()

            async def learner_published() -> bool:
                return any(m.name == "learner" and m.client_urls for m in await store.members())

            await wait_for(learner_published, within_s=20)
            listed = {m.name: m.is_learner for m in await store.members()}
            assert listed == {"m0": False, "m1": False, "m2": False, "learner": True}
            health = await check_quorum(store)
            assert (health.voters_total, health.voters_healthy) == (3, 3)
            assert "learner" not in {v.name for v in health.voters}

            cluster.members[0].kill()
            cluster.members[1].kill()
            await wait_for(lambda: _no_quorum(store), within_s=10)
        finally:
            learner.stop()
            await store.close()


async def _no_quorum(store: EtcdStore) -> bool:
    health = await check_quorum(store)
    return not health.quorum_ok and health.voters_total == 3


async def test_a_paused_voter_costs_one_request_deadline(etcd: LocalEtcdCluster) -> None:
    frozen = etcd.followers()[0]
    # The paused member is the client's first choice, the worst case for the member list too.
    urls = [frozen.client_url] + [m.client_url for m in etcd.members if m is not frozen]
    store = EtcdStore.connect(urls, request_timeout=REQUEST_TIMEOUT_S)
    try:
        await check_quorum(store)  # warm connections, so the first choice is really `frozen`
        frozen.pause()
        started = time.monotonic()
        health = await check_quorum(store)
        elapsed = time.monotonic() - started
    finally:
        await store.close()
    assert elapsed < 2 * REQUEST_TIMEOUT_S + 0.5, f"check took {elapsed:.2f} s"
    paused = next(v for v in health.voters if v.name == frozen.name)
    assert not paused.healthy, f"{frozen.name} answered while paused: {health.voters}"
    assert paused.error is not None
    assert "timed out" in paused.error
    assert (health.voters_healthy, health.quorum_ok, health.connection) == (2, True, "degraded")


# --- history guard -------------------------------------------------------------------------


def header(revision: int, cluster_id: int = CLUSTER_ID) -> Header:
    return Header(cluster_id, 1, revision, 2)


def test_the_same_history_going_forward_is_fine() -> None:
    guard = HistoryGuard()
    for revision in (5, 5, 6, 40):
        assert guard.observe(header(revision)) is None
    assert (guard.cluster_id, guard.highest_revision, guard.violation) == (CLUSTER_ID, 40, None)


def test_a_revision_going_backwards_is_sticky() -> None:
    guard = HistoryGuard()
    guard.observe(header(40))
    reason = guard.observe(header(12))
    assert reason == "etcd revision went backwards from 40 to 12: a restored snapshot?"
    assert guard.observe(header(41)) == reason
    assert guard.violation == reason


def test_a_different_cluster_id_is_a_violation() -> None:
    guard = HistoryGuard()
    guard.observe(header(40))
    reason = guard.observe(header(41, cluster_id=0xBEEF))
    assert reason == "etcd cluster id changed from c1 to beef: a different or restored cluster"
    assert guard.observe(header(42)) == reason


def test_headers_without_a_cluster_id_are_ignored() -> None:
    guard = HistoryGuard()
    guard.observe(header(40))
    assert guard.observe(header(3, cluster_id=0)) is None
    assert guard.highest_revision == 40


async def test_a_foreign_etcd_cluster_is_caught(client: EtcdStore, tmp_path: Path) -> None:
    key = f"/quorum/{uuid.uuid4().hex[:12]}"
    guard = HistoryGuard()
    assert guard.observe((await client.get(key)).header) is None
    await client.put(key, b"1")
    assert guard.observe((await client.get(key)).header) is None

    with LocalEtcdCluster(tmp_path / "other", size=1) as other:
        foreign = other.client()
        try:
            reason = guard.observe((await foreign.get(key)).header)
        finally:
            await foreign.close()
    assert reason is not None
    assert reason.startswith("etcd cluster id changed")
    assert guard.observe((await client.get(key)).header) == reason


# --- the monitor ---------------------------------------------------------------------------


@pytest.fixture
def started() -> Iterator[Callable[[QuorumMonitor], None]]:
    """Runs monitors in the background and cancels them when the test ends."""
    tasks: list[asyncio.Task[None]] = []
    yield lambda monitor: tasks.append(asyncio.ensure_future(monitor.run()))
    for task in tasks:
        task.cancel()


Changes = list[tuple[QuorumHealth, QuorumHealth]]


async def test_monitor_reports_the_first_check_and_then_only_changes(
    started: Callable[[QuorumMonitor], None],
) -> None:
    changes: Changes = []
    monitor = QuorumMonitor(MemoryStore(), interval_s=0.01)
    monitor.listen(lambda *c: changes.append(c))
    assert monitor.current.error == "not checked yet"
    started(monitor)

    async def checked_thrice() -> bool:
        return monitor.checks >= 3

    await wait_for(checked_thrice, within_s=5)
    assert monitor.current.quorum_ok
    assert len(changes) == 1
    old, new = changes[0]
    assert (old.quorum_ok, new.quorum_ok, new.connection) == (False, True, "connected")


class FailingOnce(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def members(self) -> tuple[StoreMember, ...]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug, not an outage")
        return await super().members()


async def test_monitor_logs_an_unexpected_error_and_carries_on(
    started: Callable[[QuorumMonitor], None], caplog: pytest.LogCaptureFixture
) -> None:
    changes: Changes = []
    monitor = QuorumMonitor(FailingOnce(), interval_s=0.01)
    monitor.listen(lambda *c: changes.append(c))
    started(monitor)

    async def recovered() -> bool:
        return monitor.current.quorum_ok

    with caplog.at_level(logging.ERROR, logger="sidecar.quorum"):
        await wait_for(recovered, within_s=5)
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert "a bug, not an outage" in caplog.text
    # The failed check vouches for nothing; the next one recovers.
    assert [new.quorum_ok for _, new in changes] == [False, True]
    failed = changes[0][1]
    assert failed.error is not None
    assert failed.error.startswith("quorum check failed: RuntimeError")


async def test_monitor_tells_on_change_about_a_killed_voter(
    etcd: LocalEtcdCluster, client: EtcdStore, started: Callable[[QuorumMonitor], None]
) -> None:
    changes: Changes = []
    monitor = QuorumMonitor(client, interval_s=0.1)
    monitor.listen(lambda *c: changes.append(c))
    started(monitor)

    async def all_healthy() -> bool:
        return monitor.current.voters_healthy == 3

    await wait_for(all_healthy, within_s=10)
    victim = etcd.followers()[0]
    victim.kill()

    async def change_seen() -> bool:
        return any(old.voters_healthy == 3 and new.voters_healthy == 2 for old, new in changes)

    await wait_for(change_seen, within_s=10)
    old, new = changes[-1]
    assert (old.connection, new.connection) == ("connected", "degraded")
    assert new.quorum_ok
    assert monitor.current is new
