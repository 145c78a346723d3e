"""The status document (`GET /v1/status`) as typed, checked values, and the changes between two.

The sidecar's API, `ringside status --etcd` and the renderer all speak this one shape. A document
that does not have it is refused here with one sentence naming the field, so a garbled answer
never reaches the renderer as a `KeyError` (the old status endpoint once answered something that
was not JSON and killed a monitoring script).

Only the standard library is imported: `ringside status` must start fast.

    report = parse_status(json.loads(body))
    report.healthy          # a leader and a quorum
    report.members[0].role  # "leader", "follower" or "observer"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.errors import RingsideError
from sidecar.events import EVENT_KINDS, ClusterEvent, membership_changes, parse_recorders


class NoAnswer(RingsideError):
    """Whoever we asked (a sidecar, etcd) did not answer, or answered something unusable.

    The message is one plain sentence; the CLI prints it and exits 3.
    """


class ShapeError(ValueError):
    """A document lacks a field, or a field has the wrong type; the message names it."""


def _take(document: Mapping[str, Any], name: str, *kinds: type, where: str) -> Any:
    if name not in document:
        raise ShapeError(f"{where} has no {name!r}")
    value = document[name]
    is_bool = isinstance(value, bool)
    if not isinstance(value, kinds) or (is_bool and bool not in kinds):
        expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise ShapeError(f"{where}.{name} is {type(value).__name__}, expected {expected}")
    return value


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ShapeError(f"{where} is {type(value).__name__}, expected an object")
    return value


def _strings(values: list[Any], where: str) -> tuple[str, ...]:
    if not all(isinstance(v, str) for v in values):
        raise ShapeError(f"{where} holds something that is not a string")
    return tuple(values)


@dataclass(frozen=True)
class MemberInfo:
    """One live member, as a status or members document lists it."""

    node_id: str
    addresses: tuple[str, ...]
    labels: Mapping[str, str]
    eligible: bool
    since: str | None  # ISO time the member's sidecar started
    is_leader: bool
    orchestrator_healthy: bool | None = None  # None: that node checks no orchestrator
    version: str | None = None  # its sidecar's ringside version (None: unknown)
    hostname: str | None = None
    pid: int | None = None
    # The member document as received, for `-o json|yaml`: one shape per object, the one
    # `/v1/members` and `/v1/status` serve, whatever this client's fields are named.
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def role(self) -> str:
        if self.is_leader:
            return "leader"
        return "follower" if self.eligible else "observer"


def parse_member(value: object, where: str = "member") -> MemberInfo:
    document = _mapping(value, where)
    labels = _mapping(_take(document, "labels", dict, where=where), f"{where}.labels")
    if not all(isinstance(v, str) for v in labels.values()):
        raise ShapeError(f"{where}.labels holds a value that is not a string")
    return MemberInfo(
        node_id=_take(document, "node_id", str, where=where),
        addresses=_strings(_take(document, "addresses", list, where=where), where),
        labels=dict(labels),
        eligible=_take(document, "eligible", bool, where=where),
        since=_take(document, "since", str, type(None), where=where) or None,
        is_leader=_take(document, "is_leader", bool, where=where),
        orchestrator_healthy=_orchestrator_healthy(document, where),
        version=_optional(document, "version", str, where),
        hostname=_optional(document, "hostname", str, where),
        pid=_optional(document, "pid", int, where),
        document=dict(document),
    )


def _optional(document: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    """A field older sidecars may not send, or send as null: None then."""
    if document.get(name) is None:
        return None
    return _take(document, name, kind, where=where)


def _orchestrator_healthy(document: Mapping[str, Any], where: str) -> bool | None:
    """Older sidecars send no `orchestrator`; null means the node checks none."""
    health = document.get("orchestrator")
    if health is None:
        return None
    healthy: bool = _take(_mapping(health, f"{where}.orchestrator"), "healthy", bool, where=where)
    return healthy


def parse_members(value: object, where: str = "members document") -> tuple[MemberInfo, ...]:
    """The `members` list of a status or `/v1/members` document."""
    members = _take(_mapping(value, where), "members", list, where=where)
    return tuple(parse_member(m, f"members[{i}]") for i, m in enumerate(members))


@dataclass(frozen=True)
class StatusReport:
    """The whole picture from one node (or from etcd directly, then `node_id` is None).

    `document` is the document as received, for ``-o json`` and ``-o yaml``.
    """

    cluster: str
    node_id: str | None
    leader: str | None
    epoch: int | None
    alive: int
    members: tuple[MemberInfo, ...]
    synced: bool
    quorum_ok: bool
    voters_total: int
    voters_healthy: int
    etcd_connection: str
    etcd_error: str | None
    history_violation: str | None
    revision: int
    inventory_missing: tuple[str, ...] | None
    document: Mapping[str, Any] = field(repr=False)
    leadership_note: str | None = None  # why this node leads with its orchestrator down
    health_handovers: int = 0
    handover: tuple[str, ...] = ()  # pending switchover, last change, preferred leader

    @property
    def healthy(self) -> bool:
        """A leader and an etcd quorum: what `ringside status` exits 0 for."""
        return self.leader is not None and self.quorum_ok


def parse_status(value: object) -> StatusReport:
    """Check a `/v1/status` document and type it; raise `ShapeError` naming what is wrong.

    `inventory_missing` may be absent (sidecars older than the field): read as "no inventory";
    so may `leadership_note` and `health_handovers` (older sidecars, `status --etcd`).
    """
    where = "status"
    document = _mapping(value, where)
    voters = _mapping(_take(document, "voters", dict, where=where), "status.voters")
    etcd = _mapping(_take(document, "etcd", dict, where=where), "status.etcd")
    missing = document.get("inventory_missing")
    if missing is not None and not isinstance(missing, list):
        raise ShapeError(f"status.inventory_missing is {type(missing).__name__}, expected list")
    return StatusReport(
        cluster=_take(document, "cluster", str, where=where),
        node_id=_take(document, "node_id", str, type(None), where=where),
        leader=_take(document, "leader", str, type(None), where=where),
        epoch=_take(document, "epoch", int, type(None), where=where),
        alive=_take(document, "alive", int, where=where),
        members=parse_members(document, where),
        synced=_take(document, "synced", bool, where=where),
        quorum_ok=_take(document, "quorum_ok", bool, where=where),
        voters_total=_take(voters, "total", int, where="status.voters"),
        voters_healthy=_take(voters, "healthy", int, where="status.voters"),
        etcd_connection=_take(etcd, "connection", str, where="status.etcd"),
        etcd_error=_take(etcd, "error", str, type(None), where="status.etcd"),
        history_violation=_take(document, "history_violation", str, type(None), where=where),
        revision=_take(document, "revision", int, where=where),
        inventory_missing=None if missing is None else _strings(missing, "inventory_missing"),
        document=document,
        leadership_note=_take(document, "leadership_note", str, type(None), where=where)
        if "leadership_note" in document
        else None,
        health_handovers=_take(document, "health_handovers", int, where=where)
        if "health_handovers" in document
        else 0,
        handover=handover_lines(document, where),
    )


def handover_lines(document: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Where leadership is going and why it last moved, as lines for a person: the pending
    switchover, the latest leader change with its reason, the preferred leader's standing.
    Each part is optional (older sidecars, `status --etcd`); a malformed one is a ShapeError."""
    lines: list[str] = []
    raw = document.get("switchover")
    if raw is not None:
        request = _mapping(raw, f"{where}.switchover")
        by = _take(request, "by", str, where=f"{where}.switchover")
        to = _take(request, "to", str, type(None), where=f"{where}.switchover")
        epoch = _take(request, "epoch", int, where=f"{where}.switchover")
        reason = _take(request, "reason", str, where=f"{where}.switchover")
        target = f" to {to}" if to else ""
        lines.append(f"pending: {reason}{target} asked by {by} for epoch {epoch}")
    raw = document.get("leader_change")
    if raw is not None:
        change = _mapping(raw, f"{where}.leader_change")
        leader = _take(change, "leader", str, type(None), where=f"{where}.leader_change")
        epoch = _take(change, "epoch", int, type(None), where=f"{where}.leader_change")
        code = _take(change, "reason", str, where=f"{where}.leader_change")
        why = _take(change, "why", str, where=f"{where}.leader_change")
        now = "no leader" if leader is None else f"{leader} (epoch {epoch})"
        lines.append(f"last leader change: {now}: {why} [{code}]")
    raw = document.get("preferred_leader")
    if raw is not None:
        preferred = _mapping(raw, f"{where}.preferred_leader")
        node = _take(preferred, "node_id", str, where=f"{where}.preferred_leader")
        state = _take(preferred, "state", str, where=f"{where}.preferred_leader")
        wait = _take(
            preferred, "hands_over_in_s", int, float, type(None), where=f"{where}.preferred_leader"
        )
        standing = state if wait is None else f"ready; the leader hands over in {wait:.0f} s"
        lines.append(f"preferred leader {node}: {standing}")
    return tuple(lines)


@dataclass(frozen=True)
class LeaderReport:
    """`GET /v1/leader`: who leads, at which epoch, and whether it is the node asked."""

    leader: str | None
    epoch: int | None
    is_self: bool
    reason: str
    valid_for_s: float | None
    last_known: str | None = None  # "<leader>, epoch <n>, <age> s ago" when the view is stale
    handover: tuple[str, ...] = ()  # pending switchover, last change, preferred leader
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The `/v1/leader` document as received, for `-o json|yaml` (one shape per object)."""


def _last_known(document: Mapping[str, Any], where: str) -> str | None:
    """The stale leader a sidecar last knew, as words; None when it named none."""
    raw = document.get("last_known")
    if raw is None:
        return None
    last = _mapping(raw, f"{where}.last_known")
    leader = _take(last, "leader", str, where=f"{where}.last_known")
    epoch = _take(last, "epoch", int, where=f"{where}.last_known")
    age = last.get("age_s")
    ago = f", {age:.1f} s ago" if isinstance(age, float | int) and not isinstance(age, bool) else ""
    return f"{leader[:63]}, epoch {epoch}{ago}"


def parse_leader(value: object) -> LeaderReport:
    where = "leader document"
    document = _mapping(value, where)
    valid_for = document.get("valid_for_s")
    if valid_for is not None and (
        isinstance(valid_for, bool) or not isinstance(valid_for, float | int)
    ):
        raise ShapeError(f"{where}.valid_for_s is {type(valid_for).__name__}, expected a number")
    return LeaderReport(
        leader=_take(document, "leader", str, type(None), where=where),
        epoch=_take(document, "epoch", int, type(None), where=where),
        is_self=_take(document, "is_self", bool, where=where),
        reason=_take(document, "reason", str, where=where),
        valid_for_s=None if valid_for is None else float(valid_for),
        last_known=_last_known(document, where),
        handover=handover_lines(document, where),
        document=dict(document),
    )


def parse_event(value: object) -> ClusterEvent:
    where = "event"
    document = _mapping(value, where)
    kind = _take(document, "kind", str, where=where)
    if kind not in EVENT_KINDS:
        raise ShapeError(f"event kind {kind!r} is not one of {', '.join(sorted(EVENT_KINDS))}")
    return ClusterEvent(
        kind=kind,
        revision=_take(document, "revision", int, where=where),
        detail=dict(_mapping(document.get("detail") or {}, "event.detail")),
        at=float(_take(document, "at", float, int, where=where)),
        recorded_by=parse_recorders(document.get("recorded_by")),
    )


@dataclass
class ClusterState:
    """What a watcher has shown so far; turns events and fresh reports into real changes only.

    The same change can arrive twice (an event replayed after a reconnect, or already part of
    the status read before the event stream opened); `apply` drops what changes nothing.
    """

    members: set[str]
    leader: str | None
    epoch: int | None
    quorum_ok: bool

    @classmethod
    def of(cls, report: StatusReport) -> ClusterState:
        members = {m.node_id for m in report.members}
        return cls(members, report.leader, report.epoch, report.quorum_ok)

    def apply(self, event: ClusterEvent) -> bool:
        """Take in `event`; True when it changed what we knew (so it is worth showing)."""
        if event.kind in ("member_joined", "member_left"):
            node_id = str(event.detail.get("node_id"))
            joined = event.kind == "member_joined"
            if (node_id in self.members) == joined:
                return False
            (self.members.add if joined else self.members.discard)(node_id)
            return True
        if event.kind == "leader_changed":
            now = (event.detail.get("leader"), event.detail.get("epoch"))
            if now == (self.leader, self.epoch):
                return False
            self.leader, self.epoch = now
            return True
        if event.kind in ("quorum_lost", "quorum_regained"):
            lost = event.kind == "quorum_lost"
            if self.quorum_ok != lost:
                return False
            self.quorum_ok = not lost
            return True
        return True  # news of another kind (a key restored): nothing here to compare it with

    def catch_up(self, report: StatusReport) -> list[ClusterEvent]:
        """The changes from what we knew to `report` (after polling, or a lost stream).

        Members and leader of a report that is not in sync with etcd are not news: they are
        the last ones seen, or none at all when etcd could not be read.
        """
        revision = report.revision
        candidates: list[ClusterEvent] = []
        if report.synced:
            candidates += membership_changes(
                revision,
                self.members,
                {m.node_id for m in report.members},
                (self.leader, self.epoch),
                (report.leader, report.epoch),
            )
        if report.quorum_ok:
            candidates.append(ClusterEvent("quorum_regained", revision, {}))
        else:
            reason = report.etcd_error or "too few healthy etcd voters"
            candidates.append(ClusterEvent("quorum_lost", revision, {"reason": reason}))
        return [event for event in candidates if self.apply(event)]
