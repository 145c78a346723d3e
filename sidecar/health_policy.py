"""Health-aware leadership (decision 0015) as a policy of its own: stand aside for our
orchestrator's sake.

Down: hand over if we lead, else do not campaign, but only while another candidate with a
healthy orchestrator stands; without one we lead anyway and say so. After a handover we stand
again only once healthy for `rejoin_after` seconds. The judgements about other nodes are
`sidecar.health_rule`; this object keeps our own state (the hold after a handover, how long we
have been alone) and acts through the three callables the agent gives it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar.election import Leadership
from sidecar.events import ClusterEvent
from sidecar.handover import Why
from sidecar.health_rule import healthy_alternative, seconds_in_state, why_down
from sidecar.orchestrator import OrchestratorWatch
from sidecar.records import OrchestratorHealth
from sidecar.view import ClusterView


@dataclass
class HealthPolicy:
    """`decide(view, now, standing)`: a sentence when it acts (or holds us back), else None.

    `watch` is None when our orchestrator's health may not move leadership (not eligible, no
    health URL, or `orchestrator.leadership: false`)."""

    node_id: str
    watch: OrchestratorWatch | None
    rejoin_after: float
    lease_ttl: float
    withdraw: Callable[[], Awaitable[None]]
    resign: Callable[[Why], Awaitable[bool]]
    record: Callable[[ClusterEvent], None]
    handovers: int = 0  # times we handed over for our orchestrator
    note: str | None = None  # leading with our orchestrator down, and why
    _hold: bool = False  # handed over for it: stand again once healthy long enough
    _alone_since: float | None = None  # down, and no healthy candidate seen since

    async def decide(self, view: ClusterView, now: Leadership, standing: bool) -> str | None:
        own = self.watch.current if self.watch is not None else None
        if own is None and self.watch is not None and not standing:
            return "not a candidate yet: waiting for the first orchestrator check"
        if own is not None and own.healthy and seconds_in_state(own) >= self.rejoin_after:
            self._hold = False
        down = own is not None and not own.healthy
        if not down and not (self._hold and own is not None):
            self.note = None
            return None
        assert own is not None
        alternative = healthy_alternative(view, self.node_id, starting_counts=not now.is_leader)
        if alternative is None:
            waiting = self._alone(now, down, standing)
            if waiting is not None:
                return waiting
            self._note_sole_leader(view, now, own if down else None)
            return None
        self._alone_since = None
        self.note = None
        if now.is_leader:
            return await self._hand_over(view, own, alternative) if down else None
        await self.withdraw()
        if down:
            why = f"our orchestrator is down ({own.detail})"
        else:
            healthy_s = seconds_in_state(own)
            why = (
                f"our orchestrator is healthy for {healthy_s:.0f} s of the "
                f"{self.rejoin_after:g} s needed"
            )
        return f"not a candidate: {why}; {alternative} can lead"

    def _alone(self, now: Leadership, down: bool, standing: bool) -> str | None:
        """Down and no healthy candidate in view: stand anyway, but only after one lease TTL
        of that, so nodes starting together (whose keys we may not see yet) stand first."""
        if now.is_leader or not down or standing:
            self._alone_since = None
            return None
        started = self._alone_since = self._alone_since or time.monotonic()
        left = self.lease_ttl - (time.monotonic() - started)
        if left <= 0:
            return None
        return (
            "not a candidate yet: our orchestrator is down and no healthy candidate is in "
            f"view; standing anyway in {left:.0f} s"
        )

    def _note_sole_leader(
        self, view: ClusterView, now: Leadership, down: OrchestratorHealth | None
    ) -> None:
        """No healthy candidate to hand over to: keep leading, and say so once."""
        if not (now.is_leader and down is not None):
            self.note = None
            return
        if self.note is None:
            reason = why_down(self.node_id, down)
            detail = {"node_id": self.node_id, "reason": reason}
            self.record(ClusterEvent("leading_unhealthy", view.revision, detail))
        self.note = (
            f"leading with our orchestrator down ({down.detail}): no other candidate has a "
            "healthy one"
        )

    async def _hand_over(self, view: ClusterView, own: OrchestratorHealth, successor: str) -> str:
        """Resign for `successor`: the same path as `resign` (step down, then delete our
        candidate key), counted, and held until our orchestrator has been healthy a while."""
        reason = why_down(self.node_id, own)
        self.handovers += 1
        self._hold = True
        detail = {"node_id": self.node_id, "reason": reason, "to": successor}
        self.record(ClusterEvent("health_handover", view.revision, detail))
        await self.resign(Why("orchestrator-unhealthy", reason))
        return f"handed over to {successor}: {reason}"
