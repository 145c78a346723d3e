"""Deadlines on the monotonic clock.

Every wait in ringside is bounded, and every bound is smaller than the lease TTL: a call that
could hang past the TTL would let etcd expire our lease while we still think we hold it. Wall
clock time can jump (NTP, a VM resumed); `time.monotonic()` cannot, so all deadlines use it.
"""

from __future__ import annotations

import time


class Deadline:
    """A point in monotonic time, and how much of the budget is left.

    >>> d = Deadline(1.5)
    >>> 0 < d.remaining() <= 1.5
    True
    """

    __slots__ = ("at",)

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at
