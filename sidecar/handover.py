"""Why leadership moved: one code from a fixed set, and a sentence, the same on every node.

Role hooks get the code as `RINGSIDE_REASON` (and the sentence as `RINGSIDE_REASON_DETAIL`),
leader-change events carry both, so the orchestrator can act on the code (a switchover is
planned, a crash is not) and an operator can read the sentence. The codes:

- ``election``: there was no leader before (a cluster starting, or back from a quorum loss);
- ``crash``: the old leader's keys vanished with no handover said: its lease expired (a
  crash, a cut-off node) or was revoked by a sidecar that found its epoch over; or it stopped
  rewriting its key and another candidate deposed it (decision 0022);
- ``resign``: the old leader stepped down and stayed (``ringside resign``);
- ``switchover``: ``ringside switchover`` or ``POST /v1/leader/switchover`` (decision 0016);
- ``orchestrator-unhealthy``: the old leader's orchestrator was down (decision 0015);
- ``preferred-leader``: the leader handed over to the preferred leader (decision 0017);
- ``shutdown``: the old leader's sidecar stopped (SIGTERM) and said so before leaving;
- ``lost`` (demoted only): this node stopped leading because it could not hold its lease:
  no answer from an etcd quorum, its keys changed under it, or it must not lead (rule 7).

A new leader infers the code from what etcd shows every node (`leader_change`); a node that
steps down knows its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from sidecar.events import ClusterEvent
from sidecar.health_rule import orchestrator_ok, why_down
from sidecar.records import printable
from sidecar.view import ClusterView, Switchover

HandoverCode = Literal[
    "election",
    "crash",
    "resign",
    "switchover",
    "orchestrator-unhealthy",
    "preferred-leader",
    "shutdown",
    "lost",
]
CODES: Final[frozenset[str]] = frozenset(get_args(HandoverCode))
REQUEST_CODES: Final[frozenset[str]] = frozenset({"switchover", "preferred-leader"})


@dataclass(frozen=True)
class Why:
    """A reason for a leadership change: its code and one sentence."""

    code: HandoverCode
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class LeaderChange:
    """A change of leader seen in the view: who leads now (None: nobody), at which epoch,
    why, and the etcd revision it happened at."""

    leader: str | None
    epoch: int | None
    why: Why
    revision: int

    @classmethod
    def of(cls, event: ClusterEvent) -> LeaderChange:
        """The change a `leader_changed` event of `sidecar.changes` describes."""
        detail = event.detail
        code = detail.get("reason")
        why = Why(code if code in CODES else "election", str(detail.get("why") or ""))
        leader, epoch = detail.get("leader"), detail.get("epoch")
        return cls(
            leader if isinstance(leader, str) else None,
            epoch if isinstance(epoch, int) else None,
            why,
            event.revision,
        )


def requested(request: Switchover) -> Why:
    """Why leadership moves for a switchover request (decision 0016): its reason, and who
    asked for whom. The same sentence on the node that hands over and on every other."""
    target = f" to {request.to}" if request.to else ""
    if request.reason == "preferred-leader":
        return Why("preferred-leader", f"handover{target}, the preferred leader")
    return Why("switchover", f"switchover{target} asked by {request.by}")


def leader_change(old: ClusterView, new: ClusterView) -> Why:
    """Why the leadership went from `old`'s leader to `new`'s, as every node can tell it
    from etcd: a switchover request for the old epoch, the old leader's record (orchestrator
    down, leaving), or whether its member key outlived its candidacy."""
    before = old.leader
    if before is None:
        return Why("election", "there was no leader")
    gone = before.node_id
    request = old.switchover
    now = new.leader.node_id if new.leader is not None else None
    if request is not None and request.to in (None, now):  # else it moved for another reason
        return requested(request)
    member = new.member_keys.get(gone) or old.member_keys.get(gone)
    record = member.record if member is not None else None
    if record is not None and record.leaving:
        return Why("shutdown", f"{gone} stopped ({printable(record.leaving)})")
    if record is not None and record.orchestrator is not None and not orchestrator_ok(member):
        return Why("orchestrator-unhealthy", why_down(gone, record.orchestrator))
    deposal = next((d for d in new.deposals.values() if d.epoch == before.create_revision), None)
    if deposal is not None:
        return Why("crash", f"{gone} stopped proving it is alive (deposed by {deposal.by})")
    if gone not in new.members:
        return Why("crash", f"{gone}'s lease ended without a handover")
    return Why("resign", f"{gone} stepped down")
