"""Does etcd have a quorum right now? (rule 8)

The sidecar daemon keeps asking, every couple of seconds, each etcd voter for its own view
(etcd: maintenance status) and counts the voters that answer and follow a Raft leader. Only a
strict majority of them is a quorum; without one there is no leader, and every sidecar says so
(rule 8). Whether it is still the history we knew is `sidecar.history.HistoryGuard` (rule 7).

`sidecar.cli.etcd_check` is the one-shot look behind `ringside etcd`; this is the continuous one:

    monitor = QuorumMonitor(store, interval_s=2.0)
    monitor.listen(report)  # report(old, new) on every change that matters
    task = asyncio.create_task(monitor.run())
    ...
    monitor.current.quorum_ok  # the latest QuorumHealth, never older than one interval + check
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from sidecar.store.base import Store
from sidecar.store.errors import StoreError
from sidecar.store.model import EndpointState, EndpointStatus, StoreMember

log = logging.getLogger(__name__)

Connection = Literal["connected", "degraded", "partitioned"]


@dataclass(frozen=True)
class VoterHealth:
    """One etcd voter as this node sees it.

    `healthy`: one of its addresses answered and it follows a Raft leader that is a current
    member. `raft_term` is None when it did not answer; `error` says why it is not healthy.
    """

    member_id: int
    name: str
    client_urls: tuple[str, ...]
    healthy: bool
    is_raft_leader: bool
    raft_term: int | None
    error: str | None


@dataclass(frozen=True)
class QuorumHealth:
    """One quorum check: the voters, whether a majority is healthy, and the etcd leader.

    `etcd_leader` is the name of the member most healthy voters follow, and None without a
    quorum: what a cut-off member still believes about the leader is stale. `raft_term` is
    the highest term any answering voter reported. `connection` is this client's reach to its
    configured endpoints: all answer ("connected"), some do ("degraded"), none ("partitioned").
    `checked_at` is `time.monotonic()`.
    """

    voters: tuple[VoterHealth, ...]
    voters_total: int
    voters_healthy: int
    quorum_ok: bool
    etcd_leader: str | None
    raft_term: int | None
    cluster_id: int | None
    connection: Connection
    checked_at: float
    error: str | None

    @classmethod
    def unknown(
        cls, error: str = "not checked yet", connection: Connection = "partitioned"
    ) -> QuorumHealth:
        """Nothing known: no quorum, and (until a check says otherwise) no connection.

        Saying "partitioned" before the first check is the safe reading: nothing may act as if
        etcd were there. `checked_at` is when this value was made, so its age is how long the
        monitor has waited for a first answer.
        """
        return cls((), 0, 0, False, None, None, None, connection, time.monotonic(), error)

    @property
    def summary(self) -> str:
        """One line for logs and `status`, e.g.
        "quorum ok: 3 of 3 etcd voters healthy, leader m1 (term 2); endpoints connected"."""
        if self.quorum_ok:
            text = f"quorum ok: {self.voters_healthy} of {self.voters_total} etcd voters healthy"
            text += f", leader {self.etcd_leader} (term {self.raft_term})"
        else:
            text = f"NO quorum: {self.voters_healthy} of {self.voters_total} etcd voters healthy"
        text += f"; endpoints {self.connection}"
        return f"{text}; {self.error}" if self.error else text


def connection_of(states: Iterable[EndpointState]) -> Connection:
    """How well this client reaches its configured endpoints, from what it last saw."""
    reachable = [state.reachable is True for state in states]
    if reachable and all(reachable):
        return "connected"
    return "degraded" if any(reachable) else "partitioned"


@dataclass(frozen=True)
class EndpointAnswer:
    """One endpoint asked for its own status: the status when it answered, else why not."""

    url: str
    status: EndpointStatus | None
    error: str | None
    latency_s: float

    @property
    def up(self) -> bool:
        return self.status is not None


async def ask_status(store: Store, url: str, probe_key: str | None = None) -> EndpointAnswer:
    """Ask exactly `url` (no failing over) for its status; never raises a store error.
    `probe_key`: what to read instead where etcd serves the status call to root only."""
    started = time.monotonic()
    try:
        status = await store.endpoint_status(url, probe_key=probe_key)
    except StoreError as e:
        return EndpointAnswer(
            url, None, str(e).removeprefix(f"{url}: "), time.monotonic() - started
        )
    return EndpointAnswer(url, status, None, time.monotonic() - started)


async def check_quorum(store: Store, *, probe_key: str | None = None) -> QuorumHealth:
    """Ask every voter for its status, in parallel, and count those that follow a leader.

    Configured endpoints are asked while the member list is fetched (etcd 3.4 serves it
    without quorum), then each member's client URLs not asked yet. An answer counts for the
    member that gave it (`header.member_id`), whichever URL reached it: a voter's advertised
    URLs may not be the ones this node can dial. Every call is bounded by the store's own
    request deadline (etcd: 1.5 s), so one paused voter costs about one deadline, not more.

    A voter that lost its peers keeps believing in its leader for up to one election timeout
    (measured: 1.3-1.4 s on loopback), so `quorum_ok` can lag a failure by that much.

    etcd 3.5.28 and later answer the status call to root only: with `probe_key` (a key this
    node may read) a voter then counts when a linearizable read through it succeeds, and the
    Raft leader is named only if some voter still told its status.
    """
    answers: dict[str, asyncio.Task[EndpointAnswer]] = {}

    def ask(url: str) -> None:
        if _same(url) not in answers:
            answers[_same(url)] = asyncio.ensure_future(ask_status(store, url, probe_key))

    try:
        for state in store.endpoint_states():
            ask(state.url)
        try:
            members = await store.members()
        except StoreError as e:
            members_error: str | None = f"cannot list etcd members: {e}"
            members = ()
        else:
            members_error = None
            for member in members:
                for url in member.client_urls:
                    ask(url)
        results = await asyncio.gather(*answers.values())
    finally:
        for task in answers.values():
            task.cancel()  # only matters when something unexpected broke the check

    connection = connection_of(store.endpoint_states())
    if members_error is not None:
        return QuorumHealth.unknown(members_error, connection)
    return _judge(members, results, connection)


def _same(url: str) -> str:
    """One spelling per address: "http://a:2379/" and "http://a:2379" are asked once."""
    return url.rstrip("/") if "://" in url.rstrip("/") else url


def _judge(
    members: Sequence[StoreMember], answers: Sequence[EndpointAnswer], connection: Connection
) -> QuorumHealth:
    member_ids = {m.id for m in members}
    names = {m.id: m.name or f"{m.id:x}" for m in members}
    by_member: dict[int, EndpointStatus] = {}
    for answer in answers:
        status = answer.status
        if status is None or status.header.member_id not in member_ids:
            continue
        known = by_member.get(status.header.member_id)
        if known is None or _freshness(status) > _freshness(known):
            by_member[status.header.member_id] = status

    errors = {_same(a.url): a.error for a in answers if a.error is not None}
    voters = tuple(
        _voter(m, by_member.get(m.id), member_ids, errors, names[m.id])
        for m in sorted(members, key=lambda m: names[m.id])
        if not m.is_learner  # a learner has no vote: counting it would fake a majority
    )
    healthy = [v for v in voters if v.healthy]
    quorum_ok = 2 * len(healthy) > len(voters)

    leader: str | None = None
    if quorum_ok:
        # Right after an election a few voters may still follow the old leader: most
        # followers wins, then the newer term.
        followers: dict[int, list[int]] = collections.defaultdict(list)
        for voter in healthy:
            told = by_member[voter.member_id]
            if told.leader is not None:  # None: a read stood in for a refused status call
                followers[told.leader].append(told.raft_term)
        if followers:
            best = max(followers, key=lambda lid: (len(followers[lid]), max(followers[lid])))
            leader = names.get(best, f"{best:x}")
    terms = [s.raft_term for s in by_member.values()]
    clusters = collections.Counter(s.header.cluster_id for s in by_member.values())
    return QuorumHealth(
        voters=voters,
        voters_total=len(voters),
        voters_healthy=len(healthy),
        quorum_ok=quorum_ok,
        etcd_leader=leader,
        raft_term=max(terms) if terms else None,
        cluster_id=clusters.most_common(1)[0][0] if clusters else None,
        connection=connection,
        checked_at=time.monotonic(),
        error=None if quorum_ok else "no quorum: " + "; ".join(_troubles(voters)),
    )


def _freshness(status: EndpointStatus) -> tuple[int, bool, int]:
    return (status.raft_term, status.leader != 0, status.raft_index)


def _troubles(voters: Iterable[VoterHealth]) -> list[str]:
    return [f"{v.name} {v.error}" for v in voters if v.error is not None] or ["no voters"]


def _voter(
    member: StoreMember,
    status: EndpointStatus | None,
    member_ids: set[int],
    errors: dict[str, str],
    name: str,
) -> VoterHealth:
    if status is None:
        why = [f"{url}: {errors[_same(url)]}" for url in member.client_urls if _same(url) in errors]
        if not member.client_urls:
            why = ["it has no client URL"]
        error = "does not answer: " + ("; ".join(why) or "its URLs answered as another member")
    elif status.leader is None:
        error = None  # its linearizable read went through: it is part of a quorum
    elif status.leader == 0:
        error = "answers but has no Raft leader (no quorum on its side)"
    elif status.leader not in member_ids:
        error = f"follows {status.leader:x}, which is not a member"
    else:
        error = None
    return VoterHealth(
        member_id=member.id,
        name=name,
        client_urls=member.client_urls,
        healthy=error is None,
        is_raft_leader=status is not None and status.leader == member.id,
        raft_term=status.raft_term if status is not None else None,
        error=error,
    )


ChangeHandler = Callable[[QuorumHealth, QuorumHealth], None]


class QuorumMonitor:
    """Checks the quorum every `interval_s` seconds and keeps the latest answer in `current`.

    Each listener (`listen`) is called with `(old, new)` when `quorum_ok`, `connection`,
    `etcd_leader` or `voters_healthy` changed, including after the first check (`current`
    starts as `QuorumHealth.unknown()`).
    """

    def __init__(
        self, store: Store, interval_s: float = 2.0, *, probe_key: str | None = None
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.probe_key = probe_key
        self._listeners: list[ChangeHandler] = []
        self.current = QuorumHealth.unknown()
        self.checks = 0

    def listen(self, listener: ChangeHandler) -> None:
        """Call `listener(old, new)` on every change that matters, from now on."""
        self._listeners.append(listener)

    async def check(self) -> QuorumHealth:
        """One check: update `current`, and tell the listeners if something that matters moved."""
        new = await check_quorum(self.store, probe_key=self.probe_key)
        self.checks += 1
        if self._set(new):
            log.info("etcd %s", new.summary)
        else:
            log.debug("etcd %s", new.summary)
        return new

    async def run(self) -> None:
        """Check forever, starting a check every `interval_s` (at once after an overrun).

        A check that fails unexpectedly is logged with its traceback, and `current` becomes
        "unknown" (no quorum) rather than keep vouching for an old answer.
        """
        while True:
            started = time.monotonic()
            try:
                await self.check()
            except Exception as e:
                log.exception("etcd quorum check failed; trying again")
                self._set(
                    QuorumHealth.unknown(
                        f"quorum check failed: {e!r}", connection_of(self.store.endpoint_states())
                    )
                )
            await asyncio.sleep(max(0.0, started + self.interval_s - time.monotonic()))

    def _set(self, new: QuorumHealth) -> bool:
        """Make `new` current; tell the listeners and return True if something that matters
        moved. A listener that raises is logged; the others still hear of the change."""
        old, self.current = self.current, new
        if _key(old) == _key(new):
            return False
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:
                log.exception("quorum listener %r failed", listener)
        return True


def _key(health: QuorumHealth) -> tuple[bool, str, str | None, int]:
    return (health.quorum_ok, health.connection, health.etcd_leader, health.voters_healthy)
