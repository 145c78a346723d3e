"""The daemon's event log: the most recent cluster events, live subscriptions, listeners.

The events themselves (kinds, wording) are `sidecar.events`, shared with the command line.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator

from sidecar.events import ClusterEvent

log = logging.getLogger(__name__)

Listener = Callable[[ClusterEvent], None]


class EventLog:
    """The most recent events, oldest first, and live subscriptions to new ones.

    A subscriber gets its own bounded queue; one that falls `SUBSCRIBER_BACKLOG` events behind
    is dropped (its queue gets `None`) rather than slowing the sidecar down.
    """

    SUBSCRIBER_BACKLOG = 1000

    def __init__(self, size: int = 1000) -> None:
        self._events: deque[ClusterEvent] = deque(maxlen=size)
        self._subscribers: set[asyncio.Queue[ClusterEvent | None]] = set()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every event added from now on, synchronously and in order
        (metrics count them this way: the log is a bounded ring, which a scrape could not
        count once it wraps). One that raises is logged; the event still reaches the rest."""
        self._listeners.append(listener)

    def add(self, event: ClusterEvent) -> None:
        self._events.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed", listener)
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._end(queue)  # too far behind

    def subscribe(self) -> asyncio.Queue[ClusterEvent | None]:
        queue: asyncio.Queue[ClusterEvent | None] = asyncio.Queue(self.SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def subscribe_since(
        self, revision: int
    ) -> tuple[tuple[ClusterEvent, ...], asyncio.Queue[ClusterEvent | None]]:
        """The remembered events after `revision`, and a subscription to every later one.

        The replay is a copy taken in the same synchronous step as the subscription: a reader
        that awaits between replayed events (a slow client) cannot meet the deque changing
        under it, and each event is in exactly one of the two, never lost, never twice.
        """
        replay = tuple(e for e in self._events if e.revision > revision)
        return replay, self.subscribe()

    def unsubscribe(self, queue: asyncio.Queue[ClusterEvent | None]) -> None:
        self._subscribers.discard(queue)

    def end_subscriptions(self) -> None:
        """Tell every subscriber the stream is over (shutdown: SIGTERM must not wait on them)."""
        for queue in list(self._subscribers):
            self._end(queue)

    def _end(self, queue: asyncio.Queue[ClusterEvent | None]) -> None:
        """Drop a subscriber and give it the end-of-stream mark, making room if it is full."""
        self._subscribers.discard(queue)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)

    def __iter__(self) -> Iterator[ClusterEvent]:
        return iter(self._events)
