"""Warnings about what others wrote, at a rate nobody else sets.

Anything a node can write, every sidecar reads and may warn about (rule 14). Issue 21 measured
300 invalid puts to one node's own switchover key giving 300 warnings on every sidecar in
2.7 s: a node that may write one key could fill every node's log. So each key is warned about
at most once per interval, and all keys together at most `burst` times per interval; what is
held back is counted and said with the next warning that goes out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class KeyedThrottle:
    """`warn(log, key, message, *args)`: log a warning about `key`, unless one was said about
    it within `interval_s`, or `burst` were said about any key within it."""

    def __init__(
        self,
        interval_s: float = 60.0,
        burst: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self.burst = burst
        self._clock = clock
        self._last: dict[str, float] = {}
        self._window: list[float] = []
        self.held_back = 0  # since the last warning that went out

    def allow(self, key: str) -> bool:
        now = self._clock()
        self._window = [t for t in self._window if now - t < self.interval_s]
        last = self._last.get(key)
        if (last is not None and now - last < self.interval_s) or len(self._window) >= self.burst:
            self.held_back += 1
            return False
        if len(self._last) > 10_000:  # keys are anyone's to invent: forget the old ones
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval_s}
        self._last[key] = now
        self._window.append(now)
        return True

    def warn(self, log: logging.Logger, key: str, message: str, *args: object) -> None:
        if not self.allow(key):
            return
        held, self.held_back = self.held_back, 0
        if held:
            message += f" ({held} similar warnings held back in the last {self.interval_s:g} s)"
        log.warning(message, *args)
