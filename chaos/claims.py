"""Leadership claims checked against each other and against what the campaign itself did.

A claim is an answer saying "I lead epoch E, valid for v s" (`/v1/leader` with `is_self`, or
`/v1/fence?epoch=E` answering 200). Answered at some moment t between the request's `sent`
and `received` (monotonic clock, the sidecars' own), it promises leadership until t + v.
Every check is judged the way that cannot blame a sidecar wrongly: a promise surely holds
from `received` to `sent + v`, and a check fires only when that is enough to prove it.

- the tests' own invariants (`tests.fleet.InvariantChecker.observe`): one node per epoch,
  no lower epoch answered to a request sent after a higher one was seen, a validity on
  every claim;
- overlapping validity: two nodes' promises for different epochs overlap in time. A promise
  ends early when the campaign itself resigned or terminated that node (from that moment,
  for requests sent before the resign was answered or the process was restarted); kill -9,
  partitions and SIGSTOP end nothing: those promises must hold (rule 22: the orchestrator
  that heard a promise outlives the sidecar that made it, restarted or not);
- claim after SIGTERM: rule 13, nothing said after the signal (plus a 0.25 s grace for the
  signal to reach the event loop) may be "leader";
- epoch resumed: an epoch the node resigned (200), or held in a process the campaign
  stopped, claimed again (rule 5);
- frozen leader: after SIGCONT, the very first answer of a node frozen for longer than
  TTL - margin must not claim (rule 2);
- stale view: a node cut off from every etcd quorum (quorum loss, or its path cut both ways
  or answers lost) still names a leader more than (TTL - margin) + 2 s after it lost contact
  (rules 8, 11: no leader once the view is older than TTL - margin).

`exercised` counts how often each check had something to judge, so a clean campaign can
show it was not clean for want of trying.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from chaos.findings import Findings
from chaos.probe import Answer
from tests.fleet import Claim, Fleet, InvariantChecker, Sidecar

FOREVER = math.inf
SIGTERM_GRACE_S = 0.25  # from os.kill to the sidecar's event loop running its handler, on
# a busy 2-core machine; the bug this is for claims for seconds
FROZEN_SLACK_S = 0.25  # SIGSTOP lands asynchronously; a keepalive may leave just before
STALE_SLACK_S = 2.0  # past the validity budget (TTL - margin): an old Raft leader still
# answers for up to an election timeout (1 s) after it lost its quorum
PRUNE_S = 1.0  # promises ended this long ago can no longer overlap anything new


@dataclass
class Promise:
    node_id: str
    epoch: int
    sent: float
    start: float  # the latest moment the claim can have been made
    end: float  # the earliest moment its promise can end
    valid_for_s: float


@dataclass
class Ending:
    """The campaign ended `node_id`'s promises at `at`, for requests sent before `until`
    (the resign's answer, or the process's restart)."""

    node_id: str
    at: float
    until: float = FOREVER


@dataclass
class ClaimChecks:
    fleet: Fleet
    findings: Findings
    ttl: float
    margin: float
    claims: int = 0
    exercised: Counter[str] = field(default_factory=Counter)
    _base: InvariantChecker[Sidecar] = field(init=False)
    _active: list[Promise] = field(default_factory=list)
    _endings: dict[str, list[Ending]] = field(default_factory=lambda: defaultdict(list))
    _terminated: dict[str, float] = field(default_factory=dict)
    _retired: dict[tuple[str, int], tuple[float, str]] = field(default_factory=dict)
    _held: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    _blind: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def __post_init__(self) -> None:
        self._base = InvariantChecker(self.fleet)

    # --- what the campaign did -------------------------------------------------------------

    def stopped(self, node_id: str, at: float, *, sigterm: bool) -> None:
        """kill -9 or SIGTERM sent at `at`. A SIGTERM hands over on purpose: its promises end
        then, until it is restarted. A killed process's promises hold to their end (rule 22)."""
        if sigterm:
            self._end(Ending(node_id, at))
            self._terminated[node_id] = at

    def restarted(self, node_id: str, at: float) -> None:
        """A new process for `node_id`: the old one's epochs are over for good."""
        for ending in self._endings[node_id]:
            ending.until = min(ending.until, at)
        self._terminated.pop(node_id, None)
        for epoch in self._held.pop(node_id, set()):
            self._retired.setdefault((node_id, epoch), (at, "restarted the process that held"))

    def resigning(self, node_id: str, at: float) -> Ending:
        ending = Ending(node_id, at)
        self._end(ending)
        return ending

    def resigned(self, ending: Ending, at: float, epoch: int | None) -> None:
        """The resign request was answered at `at`; with `epoch` when it said it resigned."""
        ending.until = at
        if epoch is not None:
            self._retired[(ending.node_id, epoch)] = (at, "resigned")

    def blind(self, node_ids: list[str], because: str, at: float) -> None:
        for node_id in node_ids:
            self._blind[node_id].setdefault(because, at)

    def sighted(self, node_ids: list[str], because: str) -> None:
        for node_id in node_ids:
            self._blind[node_id].pop(because, None)

    def _end(self, ending: Ending) -> None:
        self._endings[ending.node_id].append(ending)
        for promise in self._active:
            if promise.node_id == ending.node_id and promise.sent < ending.until:
                promise.end = min(promise.end, max(ending.at, promise.sent))

    # --- what the sidecars said ------------------------------------------------------------

    def leader_answer(self, node_id: str, answer: Answer) -> None:
        """One `/v1/leader` answer."""
        body = answer.body
        if body is None:
            return
        terminated = self._terminated.get(node_id)
        if terminated is not None and answer.sent > terminated + SIGTERM_GRACE_S:
            self.exercised["answers after SIGTERM"] += 1
        self._stale_view(node_id, answer, body)
        if body.get("is_self") is True:
            self._claim(node_id, answer, body, "/v1/leader")

    def fence_answer(self, node_id: str, answer: Answer) -> None:
        """One `/v1/fence?epoch=E` answer: 200 is a claim of E."""
        if answer.status == 200 and answer.body is not None:
            self._claim(node_id, answer, answer.body, "/v1/fence")

    def first_after_resume(
        self, node_id: str, answer: Answer, stopped_at: float, resumed_at: float
    ) -> None:
        """The first answer of a node after SIGCONT (`stopped_at`: when SIGSTOP was sent)."""
        body = answer.body or {}
        frozen_s = resumed_at - stopped_at
        past_deadline = frozen_s > self.ttl - self.margin + FROZEN_SLACK_S
        self.exercised["frozen first answers past the deadline"] += past_deadline
        if body.get("is_self") is True and past_deadline:
            self.findings.violation(
                "frozen-leader-claimed",
                node_id,
                f"claimed epoch {body.get('epoch')} (valid {body.get('valid_for_s')} s) on its "
                f"first answer after SIGCONT, frozen {frozen_s:.2f} s: its validity could last "
                f"at most TTL - margin = {self.ttl - self.margin:.1f} s from the SIGSTOP",
                now=answer.received,
            )
        self.leader_answer(node_id, answer)

    def _claim(self, node_id: str, answer: Answer, body: dict[str, Any], via: str) -> None:
        epoch, valid = body.get("epoch"), body.get("valid_for_s")
        if not isinstance(epoch, int) or not isinstance(valid, int | float):
            self.findings.violation(
                "malformed-claim", node_id, f"{via} claims leadership: {body}", key=via
            )
            return
        self.claims += 1
        claim = Claim(node_id, epoch, answer.sent, answer.received, float(valid))
        before = len(self._base.violations)
        self._base.observe(claim)
        for text in self._base.violations[before:]:
            self.findings.violation(_base_check(text), node_id, text, now=answer.received)
        self._held[node_id].add(epoch)
        self._after_stop(claim, via)
        self._overlap(claim, via)

    def _after_stop(self, claim: Claim, via: str) -> None:
        terminated = self._terminated.get(claim.node_id)
        if terminated is not None and claim.sent > terminated + SIGTERM_GRACE_S:
            self.findings.violation(
                "claim-after-sigterm",
                claim.node_id,
                f"{via} claimed epoch {claim.epoch} (valid {claim.valid_for_s:.3f} s) to a "
                f"request sent {claim.sent - terminated:.3f} s after SIGTERM",
                key=str(claim.epoch),
                now=claim.received,
            )
        retired = self._retired.get((claim.node_id, claim.epoch))
        if retired is not None and claim.sent > retired[0]:
            self.findings.violation(
                "epoch-resumed",
                claim.node_id,
                f"{via} claimed epoch {claim.epoch} to a request sent "
                f"{claim.sent - retired[0]:.3f} s after the campaign {retired[1]} it",
                key=str(claim.epoch),
                now=claim.received,
            )

    def _overlap(self, claim: Claim, via: str) -> None:
        end = claim.sent + claim.valid_for_s
        for ending in self._endings[claim.node_id]:
            if claim.sent < ending.until:
                end = min(end, max(ending.at, claim.sent))
        new = Promise(
            claim.node_id, claim.epoch, claim.sent, claim.received, end, claim.valid_for_s
        )
        self._active = [p for p in self._active if p.end > claim.received - PRUNE_S]
        worst: dict[tuple[str, int], tuple[float, Promise]] = {}
        for old in self._active:
            if old.node_id == new.node_id or old.epoch == new.epoch:
                continue
            self.exercised["pairs of two leaders' promises compared"] += 1
            overlap = min(old.end, new.end) - max(old.start, new.start)
            key = (old.node_id, old.epoch)
            if overlap > 0 and overlap > worst.get(key, (0.0, old))[0]:
                worst[key] = (overlap, old)
        for overlap, old in worst.values():  # one finding per new claim and other leader
            lower, higher = sorted((old, new), key=lambda p: p.epoch)
            t = self.findings.since_start
            self.findings.violation(
                "overlapping-validity",
                higher.node_id,
                f"{higher.node_id} claimed epoch {higher.epoch} at t+{t(higher.start):.3f} s "
                f"(valid {higher.valid_for_s:.3f} s) and {lower.node_id} claimed epoch "
                f"{lower.epoch} at t+{t(lower.start):.3f} s (valid {lower.valid_for_s:.3f} s): "
                f"both promised leadership for {overlap:.3f} s at once (seen via {via})",
                key=f"{lower.node_id}:{lower.epoch}/{higher.epoch}",
                now=claim.received,
            )
        self._active.append(new)

    def _stale_view(self, node_id: str, answer: Answer, body: dict[str, Any]) -> None:
        since = min(self._blind[node_id].values(), default=None)
        if since is None or answer.sent <= since + self.ttl - self.margin + STALE_SLACK_S:
            return
        self.exercised["answers of cut-off sidecars past the validity budget"] += 1
        if body.get("leader") is not None or body.get("is_self") is True:
            why = ", ".join(sorted(self._blind[node_id]))
            self.findings.violation(
                "stale-view",
                node_id,
                f"named {body.get('leader')} (epoch {body.get('epoch')}, is_self "
                f"{body.get('is_self')}) {answer.sent - since:.1f} s after losing contact with "
                f"every etcd quorum ({why}); no leader may be named once the view is older "
                f"than TTL - margin",
                key=why,
                now=answer.received,
            )


def _base_check(text: str) -> str:
    """A name for each of `InvariantChecker.observe`'s sentences."""
    if " and by " in text:
        return "epoch-two-owners"
    if " after epoch " in text:
        return "epoch-order"
    return "claim-without-validity"
