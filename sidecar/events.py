"""What changed between two cluster snapshots, as events people and programs can follow.

The sidecar logs one line per event and keeps the recent ones in memory, each stamped with the
etcd revision it happened at, so a reader can ask for "everything since revision R".
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from sidecar.cli.tables import describe_event
from sidecar.view import ClusterView

EventKind = Literal[
    "member_joined",
    "member_left",
    "leader_changed",
    "quorum_lost",
    "quorum_regained",
    "key_restored",
]


@dataclass(frozen=True)
class ClusterEvent:
    kind: EventKind
    revision: int
    detail: dict[str, object]
    at: float = field(default_factory=time.time)  # wall clock, for people

    def document(self) -> dict[str, object]:
        return {"kind": self.kind, "revision": self.revision, "at": self.at, "detail": self.detail}

    def sentence(self) -> str:
        """The event as one log line (the same words `ringside status --watch` prints)."""
        return describe_event(self.kind, self.detail)


def diff_views(old: ClusterView, new: ClusterView) -> list[ClusterEvent]:
    """Membership and leader changes from `old` to `new`.

    An unsynced view keeps its last contents, so a reload that finds nothing new yields no
    events; the very first load reports every member as joined and the current leader.
    """
    if not new.synced:
        return []
    events = [
        ClusterEvent("member_joined", new.revision, {"node_id": node_id})
        for node_id in sorted(new.members.keys() - old.members.keys())
    ]
    events += [
        ClusterEvent("member_left", new.revision, {"node_id": node_id})
        for node_id in sorted(old.members.keys() - new.members.keys())
    ]
    if (old.leader, old.epoch) != (new.leader, new.epoch):
        leader = new.leader.node_id if new.leader else None
        events.append(
            ClusterEvent("leader_changed", new.revision, {"leader": leader, "epoch": new.epoch})
        )
    return events


class EventLog:
    """The most recent events, oldest first, and live subscriptions to new ones.

    A subscriber gets its own bounded queue; one that falls `SUBSCRIBER_BACKLOG` events behind
    is dropped (its queue gets `None`) rather than slowing the sidecar down.
    """

    SUBSCRIBER_BACKLOG = 1000

    def __init__(self, size: int = 1000) -> None:
        self._events: deque[ClusterEvent] = deque(maxlen=size)
        self._subscribers: set[asyncio.Queue[ClusterEvent | None]] = set()

    def add(self, event: ClusterEvent) -> None:
        self._events.append(event)
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
