"""Deadlines on the monotonic clock.

Every wait in ringside is bounded, and every bound is smaller than the lease TTL: a call that
could hang past the TTL would let etcd expire our lease while we still think we hold it. Wall
clock time can jump (NTP, a VM resumed); `time.monotonic()` cannot, so all deadlines use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar


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

    def earlier(self, other: Deadline | None) -> Deadline:
        """Whichever of the two comes first."""
        return self if other is None or self.at <= other.at else other


_ENCLOSING: ContextVar[Deadline | None] = ContextVar("ringside_enclosing_deadline", default=None)


def enclosing() -> Deadline | None:
    """The deadline of the innermost `within` block around the caller, if any."""
    return _ENCLOSING.get()


@contextmanager
def within(seconds: float) -> Iterator[Deadline]:
    """Every etcd exchange started inside the block ends by this deadline, all endpoints and
    retries included.

    A budget imposed from outside by cancelling (`asyncio.timeout`) arrives inside the HTTP
    client as a timeout that looks like a failed endpoint, so the client would try the next
    one; a budget the client can read stops it cleanly instead. Shutdown uses this: it must
    finish in time even when every endpoint hangs (safety rule 13).
    """
    deadline = Deadline(seconds).earlier(_ENCLOSING.get())
    token = _ENCLOSING.set(deadline)
    try:
        yield deadline
    finally:
        _ENCLOSING.reset(token)
