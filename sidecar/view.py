"""The cluster as etcd last told us: one immutable snapshot, replaced whole on every change.

Read the `/ringside/<cluster>/` prefix once, then watch from the next revision. Each batch of
events makes a new `ClusterView`; readers (the election, the HTTP API, the CLI, metrics) take
`keeper.current` and never see a half-applied change. A compacted revision or a watch that
cannot be served reloads the whole prefix, so a deletion is never missed (safety rule 9):
the reload shows the key as absent even when its DELETE event was compacted away.

Anything under the prefix may have been written by anyone who can write there, so the view
believes only what is valid (design notes, "etcd keys"; rule 14). A candidate counts only
while it is on a live lease (not 0), its value is a node id and its key names that node
(`election/<node_id>`; or, from a ringside 0.1 member during an upgrade, its lease: decision
0010), and that node is a live member, on the same lease, whose record says it is eligible and
was written before the candidacy (a member key written again later means the node re-joined:
its old candidacy is over), whose record declares a proof of life no longer than the cluster's
maximum (`Rules.max_ttl_s`), and whose candidacy no deposal names (decision 0022: a candidate
that stopped rewriting its key was deposed by another, through a transaction that proved it).
Every other key under `election/` is ignored and reported (`ClusterView.ignored`): a stray or
forged key must never lead, and never block a real candidate. All sidecars see the same keys at
the same revision, so they all agree on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from sidecar.deposals import Deposal, parse_deposal
from sidecar.keys import Keys
from sidecar.records import ELECTION_LAYOUT, MemberRecord, json_object, parse_record, printable
from sidecar.settings import DNS_LABEL
from sidecar.sightings import FirstSeen
from sidecar.store.base import Store
from sidecar.store.errors import Compacted, StoreError
from sidecar.store.model import EventType, Header, KeyValue
from sidecar.throttle import KeyedThrottle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rules:
    """What every node must configure alike for the view to be the same everywhere."""

    max_ttl_s: int = 60  # a proof of life declared longer than this counts for nothing
    legacy: bool = False  # ringside 0.1 candidates count, by their lease alone (an upgrade)


@dataclass(frozen=True)
class Member:
    """A live member: its key exists, so its lease is alive."""

    node_id: str
    record: MemberRecord | None  # None when the value is not a record ringside can read
    lease: int
    create_revision: int
    # Its last proof of life (decision 0022); not part of its identity: a key rewritten as
    # proof is the same membership.
    mod_revision: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Switchover:
    """A request, written by node `by`, that the leader of `epoch` hand over: to `to`, or to
    the next candidate when `to` is None (decision 0016). Stale once the epoch moved on."""

    by: str
    to: str | None
    epoch: int
    revision: int
    reason: str = "switchover"  # or "preferred-leader" (decision 0017)
    timeout_s: float = 30.0  # its writer withdraws it then; every node stops waiting then


MAX_SWITCHOVER_BYTES = 1024
MAX_SWITCHOVER_WAIT_S = 660.0  # the API's longest timeout (600 s) and the longest hold


def parse_switchover(by: str, kv: KeyValue) -> Switchover | None:
    """The request in `kv`, or None when it is not one (hostile input: rule 14)."""
    document = json_object(kv.value, MAX_SWITCHOVER_BYTES)
    if document is None or kv.lease == 0:
        return None
    to, epoch = document.get("to"), document.get("epoch")
    if to is not None and not (isinstance(to, str) and DNS_LABEL.fullmatch(to)):
        return None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch <= 0:
        return None
    reason = document.get("reason", "switchover")
    if reason not in ("switchover", "preferred-leader"):
        return None
    timeout_s = document.get("timeout_s", 30.0)
    if not isinstance(timeout_s, (int, float)) or isinstance(timeout_s, bool):
        return None
    timeout_s = min(max(float(timeout_s), 1.0), MAX_SWITCHOVER_WAIT_S)
    return Switchover(by, to, epoch, kv.mod_revision, reason, timeout_s)


@dataclass(frozen=True)
class Candidate:
    """An election key. The lowest `create_revision` leads, and that revision is the epoch."""

    key: str
    node_id: str
    lease: int
    create_revision: int
    # Its holder's last proof of life (decision 0022); not part of its identity: a key
    # rewritten as proof is the same candidacy.
    mod_revision: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Ignored:
    """A key under `election/` that is no valid candidate, and why (for logs and status)."""

    key: str
    reason: str


@dataclass(frozen=True)
class ClusterView:
    """Members and candidates at `revision`. `synced` is false until loaded, and while a
    reload is pending after a broken watch (the view may then be stale).

    `candidates` holds every key under `election/`, oldest first; `electable` the valid ones
    (see the module doc) and `ignored` the others with the reason.
    """

    revision: int = 0
    # Live members: a key on a lease, whose holder proved itself in time as far as this node
    # saw (`silent` are the others, decision 0022). `member_keys` holds every member key on a
    # lease, proven or not: the election is judged on it, the same on every node.
    members: Mapping[str, Member] = field(default_factory=lambda: MappingProxyType({}))
    member_keys: Mapping[str, Member] = field(default_factory=lambda: MappingProxyType({}))
    silent: frozenset[str] = frozenset()
    candidates: tuple[Candidate, ...] = ()
    synced: bool = False
    changed_at: float = 0.0  # wall-clock time of the last change, for people
    header: Header | None = None
    electable: tuple[Candidate, ...] = ()
    ignored: tuple[Ignored, ...] = ()
    # Node ids whose member key sits on no lease: no lease can expire it, so it says nothing
    # about a live node (rule 12). Not members; their owner replaces such a key when it runs.
    unleased: frozenset[str] = frozenset()
    switchovers: Mapping[str, Switchover] = field(default_factory=lambda: MappingProxyType({}))
    # Deposals by key (decision 0022), and the newest revision written under `deposals/`: a
    # candidate renews its key only while nothing newer is there (a deposal it has not seen).
    deposals: Mapping[str, Deposal] = field(default_factory=lambda: MappingProxyType({}))
    deposals_revision: int = 0
    rules: Rules = Rules()

    @property
    def switchover(self) -> Switchover | None:
        """The newest request for the current epoch; None when there is none (or no leader)."""
        current = [s for s in self.switchovers.values() if s.epoch == self.epoch]
        return max(current, key=lambda s: s.revision) if current else None

    @property
    def leader(self) -> Candidate | None:
        """The oldest valid candidate."""
        return self.electable[0] if self.electable else None

    @property
    def epoch(self) -> int | None:
        """The fencing token: the leader key's create_revision."""
        return self.electable[0].create_revision if self.electable else None

    @property
    def alive(self) -> int:
        return len(self.members)

    def older_layout_candidates(self, but: str) -> tuple[Member, ...]:
        """Live eligible members other than `but` that still name their candidate key by their
        lease (ringside 0.1): they cannot see a node-named key, so no newer sidecar may stand
        beside them (decision 0010)."""
        return tuple(
            m
            for node_id, m in self.members.items()
            if node_id != but
            and m.record is not None
            and m.record.eligible
            and m.record.election_layout < ELECTION_LAYOUT
        )


def build_view(
    keys: Keys, kvs: tuple[KeyValue, ...], header: Header, rules: Rules = Rules()
) -> ClusterView:
    """The view of a full load: every key as if it had just been put."""
    puts = tuple((EventType.PUT, kv) for kv in kvs)
    return apply_batch(keys, ClusterView(synced=True, rules=rules), puts, header)


MAX_CANDIDATE_BYTES = 256
_said = KeyedThrottle()  # warnings about keys others wrote (sidecar.throttle)


@dataclass
class _Draft:
    """The view's contents while a batch is applied to them."""

    members: dict[str, Member]
    candidates: list[Candidate]
    unleased: set[str]
    switchovers: dict[str, Switchover]
    deposals: dict[str, Deposal]
    deposal_writes: list[int]  # mod_revisions of every key written under `deposals/`


def _apply_put(keys: Keys, kv: KeyValue, draft: _Draft) -> None:
    if kv.key.startswith(keys.deposals):
        draft.deposal_writes.append(kv.mod_revision)
        deposal = parse_deposal(keys, kv)
        if deposal is None:
            draft.deposals.pop(kv.key, None)
            _said.warn(
                log, kv.key, "ignoring deposal key %s: not a deposal", printable(kv.key, 120)
            )
        else:
            draft.deposals[kv.key] = deposal
        return
    if kv.key.startswith(keys.switchovers):
        by = kv.key.removeprefix(keys.switchovers)
        request = parse_switchover(by, kv) if DNS_LABEL.fullmatch(by) else None
        if request is None:
            draft.switchovers.pop(by, None)
            _said.warn(
                log, kv.key, "ignoring switchover key %s: not a request", printable(kv.key, 120)
            )
        else:
            draft.switchovers[by] = request
        return
    if kv.key.startswith(keys.members):
        node_id = kv.key.removeprefix(keys.members)
        if not DNS_LABEL.fullmatch(node_id):
            draft.members.pop(node_id, None)
            _said.warn(log, kv.key, "ignoring member key %r: not a node id", printable(kv.key, 120))
            return
        if kv.lease == 0:
            draft.members.pop(node_id, None)
            draft.unleased.add(node_id)
            _said.warn(
                log, kv.key, "ignoring member key %s: on no lease, so no live node holds it", kv.key
            )
            return
        draft.unleased.discard(node_id)
        record = parse_record(kv, node_id)
        draft.members[node_id] = Member(
            node_id, record, kv.lease, kv.create_revision, kv.mod_revision
        )
    elif kv.key.startswith(keys.election):
        draft.candidates[:] = [c for c in draft.candidates if c.key != kv.key]
        small = len(kv.value) <= MAX_CANDIDATE_BYTES  # a node id is at most 63 bytes
        node_id = kv.value.decode(errors="replace") if small else ""
        draft.candidates.append(
            Candidate(kv.key, node_id, kv.lease, kv.create_revision, kv.mod_revision)
        )


def why_not_electable(
    keys: Keys,
    candidate: Candidate,
    members: Mapping[str, Member],
    rules: Rules = Rules(),
    deposed: Mapping[int, Deposal] = MappingProxyType({}),
) -> str | None:
    """None when `candidate` may lead; else why it is ignored (see the module doc)."""
    if candidate.lease == 0:
        return "not on a lease (it would never expire)"
    if not DNS_LABEL.fullmatch(candidate.node_id):
        return "its value is not a node id"
    name = candidate.key.removeprefix(keys.election)
    lease_named = name == f"{candidate.lease:x}" and name != candidate.node_id
    if name != candidate.node_id and not lease_named:
        return "its key does not name its node"
    member = members.get(candidate.node_id)
    if member is None:
        return f"{candidate.node_id} is not a live member"
    if member.lease != candidate.lease:
        return f"not on the lease of member {candidate.node_id}"
    if lease_named and (member.record is None or member.record.election_layout != 1):
        return f"named by its lease, as only ringside 0.1 does, and {candidate.node_id} is newer"
    if member.record is None or not member.record.eligible:
        return f"member {candidate.node_id} is not leader-eligible"
    if member.create_revision > candidate.create_revision:
        return f"member {candidate.node_id} joined again after this candidacy"
    if member.record.proof_ttl == 0 and not (rules.legacy and member.record.election_layout == 1):
        return (
            f"member {candidate.node_id} declares no proof of life: its lease alone proves "
            "nothing (a sidecar from before 0.2, or a record written by hand)"
        )
    if member.record.proof_ttl > rules.max_ttl_s:
        return (
            f"member {candidate.node_id} declares a proof of life of {member.record.proof_ttl} s, "
            f"longer than the cluster's maximum ({rules.max_ttl_s} s)"
        )
    deposal = deposed.get(candidate.create_revision)
    if deposal is not None and deposal.proof == candidate.mod_revision:
        return f"deposed by {deposal.by}: no proof of life since revision {deposal.proof}"
    return None


def _judge(
    keys: Keys, candidates: list[Candidate], draft: _Draft, rules: Rules
) -> tuple[tuple[Candidate, ...], tuple[Ignored, ...]]:
    electable: list[Candidate] = []
    ignored: list[Ignored] = []
    deposed = {d.epoch: d for d in draft.deposals.values()}
    for candidate in candidates:
        reason = why_not_electable(keys, candidate, draft.members, rules, deposed)
        if reason is None:
            electable.append(candidate)
        else:
            ignored.append(Ignored(candidate.key, reason))
    return tuple(electable), tuple(ignored)


def apply_batch(
    keys: Keys, view: ClusterView, events: tuple[tuple[EventType, KeyValue], ...], header: Header
) -> ClusterView:
    """The view after one batch of events (pure: the old view is not touched)."""
    draft = _Draft(
        dict(view.member_keys),
        list(view.candidates),
        set(view.unleased),
        dict(view.switchovers),
        dict(view.deposals),
        [view.deposals_revision],
    )
    for kind, kv in events:
        if kind is EventType.PUT:
            _apply_put(keys, kv, draft)
        elif kv.key.startswith(keys.deposals):
            draft.deposals.pop(kv.key, None)
        elif kv.key.startswith(keys.switchovers):
            draft.switchovers.pop(kv.key.removeprefix(keys.switchovers), None)
        elif kv.key.startswith(keys.members):
            draft.members.pop(kv.key.removeprefix(keys.members), None)
            draft.unleased.discard(kv.key.removeprefix(keys.members))
        else:
            draft.candidates[:] = [c for c in draft.candidates if c.key != kv.key]
    candidates = sorted(draft.candidates, key=lambda c: c.create_revision)
    electable, ignored = _judge(keys, candidates, draft, view.rules)
    member_keys = dict(sorted(draft.members.items()))
    # Still silent: unchanged since the keeper judged them so; a new proof speaks for itself.
    silent = frozenset(
        node_id
        for node_id in view.silent
        if node_id in member_keys
        and member_keys[node_id].mod_revision == view.member_keys[node_id].mod_revision
    )
    return replace(
        view,
        revision=header.revision,
        members=_live(member_keys, silent),
        member_keys=MappingProxyType(member_keys),
        silent=silent,
        candidates=tuple(candidates),
        changed_at=time.time(),
        header=header,
        electable=electable,
        ignored=ignored,
        unleased=frozenset(draft.unleased),
        switchovers=MappingProxyType(draft.switchovers),
        deposals=MappingProxyType(draft.deposals),
        deposals_revision=max(draft.deposal_writes),
    )


def _live(member_keys: Mapping[str, Member], silent: frozenset[str]) -> Mapping[str, Member]:
    return MappingProxyType({k: m for k, m in member_keys.items() if k not in silent})


def with_silent(view: ClusterView, silent: frozenset[str]) -> ClusterView:
    """`view` with `silent` members set apart (they keep their keys, and their place in the
    election, until a deposal or their lease ends them)."""
    silent = silent & view.member_keys.keys()
    if silent == view.silent:
        return view
    return replace(view, silent=silent, members=_live(view.member_keys, silent))


def silent_members(first_seen: FirstSeen, view: ClusterView, now: float) -> frozenset[str]:
    """The members whose key has not changed for longer than the proof of life their record
    declares, whoever keeps their lease alive (decision 0022); one declaring more than the
    cluster's maximum at once. Records from 0.1 (0) are judged by their lease alone."""
    first_seen.update({n: m.mod_revision for n, m in view.member_keys.items()}, now)
    found = set()
    for node_id, member in view.member_keys.items():
        declared = member.record.proof_ttl if member.record is not None else 0
        silent = first_seen.silent_for(node_id, member.mod_revision, now)
        if declared > view.rules.max_ttl_s or (declared and silent > declared):
            found.add(node_id)
    return frozenset(found)


class ViewListener(Protocol):
    """What a `ViewKeeper` tells its listeners (the agent is one)."""

    def view_changed(self, old: ClusterView, new: ClusterView) -> None:
        """A new view replaced `old` (every batch, every reload, every loss of sync)."""

    def header_seen(self, header: Header) -> None:
        """An etcd header arrived, from a full load or a watch batch (the history check)."""

    def view_loaded(self, sent: float) -> None:
        """A full load, a linearizable read sent at `sent` (monotonic), succeeded."""


class ViewKeeper:
    """Keeps `current` up to date from etcd and tells each listener (`listen`) of every new
    view, every etcd header seen, and every full load."""

    def __init__(
        self,
        store: Store,
        keys: Keys,
        *,
        retry_s: float = 0.5,
        rules: Rules = Rules(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.keys = keys
        self.rules = rules
        self.current = ClusterView(rules=rules)
        self.sightings = FirstSeen()
        self._clock = clock
        self._listeners: list[ViewListener] = []
        self._retry_s = retry_s

    def listen(self, listener: ViewListener) -> None:
        self._listeners.append(listener)

    def judge_silence(self) -> None:
        """Set apart the members that stopped proving they are alive, by our clock now (the
        keeper does after every batch; the owner's loop calls it between batches too)."""
        current = self.current
        judged = with_silent(current, silent_members(self.sightings, current, self._clock()))
        if judged is not current:
            self._publish(judged)

    def _publish(self, view: ClusterView) -> None:
        view = with_silent(view, silent_members(self.sightings, view, self._clock()))
        old, self.current = self.current, view
        for listener in self._listeners:
            listener.view_changed(old, view)

    async def run(self) -> None:
        """Load, watch, and on any break reload; runs until cancelled."""
        while True:
            try:
                await self._load_and_watch()
            except Compacted as e:
                log.warning("view: history compacted (%s); reloading", e)
            except StoreError as e:
                log.warning("view: watch broken (%s); reloading", e)
            except Exception:
                log.exception("view: unexpected error; reloading")
            if self.current.synced:
                self._publish(replace(self.current, synced=False))
            await asyncio.sleep(self._retry_s)

    async def _load_and_watch(self) -> None:
        sent = time.monotonic()
        loaded = await self.store.get(self.keys.prefix, prefix=True)
        for listener in self._listeners:
            listener.header_seen(loaded.header)
            listener.view_loaded(sent)  # a linearizable read: current as of its sending
        self._publish(build_view(self.keys, loaded.kvs, loaded.header, self.rules))
        start = loaded.revision + 1
        async with self.store.watch(self.keys.prefix, prefix=True, start_revision=start) as batches:
            async for batch in batches:
                for listener in self._listeners:
                    listener.header_seen(batch.header)
                events = tuple((e.type, e.kv) for e in batch.events)
                self._publish(apply_batch(self.keys, self.current, events, batch.header))
