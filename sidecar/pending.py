"""Which switchover request the rules act on: the view's, until it has waited too long.

A request names the epoch it asks to end, and its writer withdraws it once its own deadline
passes (decision 0016). But a writer that stopped running while something keeps its lease alive
never withdraws it, and a request whose target cannot be reached (a candidate ahead of it that
never queues again) never completes: issue 21 measured a leader whose orchestrator was down
kept for 55 s behind one, and the preferred-leader rule blocked the same way. So every node
times each request it sees, by revision, on its own monotonic clock, and drops it once it has
been pending for `timeout_s`: from then on no rule waits for it. It is said once, per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sidecar.view import ClusterView, Switchover

log = logging.getLogger(__name__)


@dataclass
class PendingSwitchover:
    """`current(view, now)`: the request to act on, or None once it has waited its own
    timeout (the one its writer gave, which it withdraws it after) plus `grace_s`."""

    grace_s: float
    _first_seen: dict[int, float] = field(default_factory=dict)
    _said: set[int] = field(default_factory=set)
    dropped: int = 0  # requests this node stopped waiting for

    def current(self, view: ClusterView, now: float) -> Switchover | None:
        request = view.switchover
        if request is None:
            self._first_seen.clear()
            return None
        seen = self._first_seen.setdefault(request.revision, now)
        for revision in [r for r in self._first_seen if r != request.revision]:
            del self._first_seen[revision]
        limit = request.timeout_s + self.grace_s
        if now - seen < limit:
            return request
        if request.revision not in self._said:
            self._said.add(request.revision)
            self.dropped += 1
            target = f" to {request.to}" if request.to else ""
            log.warning(
                "switchover%s asked by %s for epoch %d not done within %.0f s; no longer "
                "waiting for it",
                target, request.by, request.epoch, limit,
                extra={"event": "switchover_dropped", "by": request.by},
            )  # fmt: skip
        return None
