"""Cluster events: their kinds, their one-sentence wording, and the log that keeps them.

Shared by the daemon (which logs one line per event, keeps the recent ones and streams them on
`/v1/events`) and the command line (`ringside status --watch` prints the same sentences), so it
imports the standard library only: `ringside status` must start fast. Each event is stamped
with the etcd revision it happened at, so a reader can ask for "everything since revision R".
Which events a change of view or of quorum makes is `sidecar.changes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

log = logging.getLogger(__name__)

EventKind = Literal[
    "member_joined",
    "member_left",
    "leader_changed",
    "quorum_lost",
    "quorum_regained",
    "key_restored",
]
EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))


@dataclass(frozen=True)
class ClusterEvent:
    """One change: a member joined or left, the leader changed, quorum was lost or regained,
    or this node wrote one of its keys again.

    `revision` is the etcd revision it happened at, `at` the wall-clock time (unix seconds, for
    people). `detail` carries `node_id` (joined, left), `leader` and `epoch` (leader changed),
    `reason` (quorum lost) or `what` and `key` (key restored).
    """

    kind: str
    revision: int
    detail: Mapping[str, Any]
    at: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "revision": self.revision,
            "at": self.at,
            "detail": dict(self.detail),
        }

    def sentence(self) -> str:
        """The event as one sentence: the sidecar's log line and `status --watch`'s line."""
        detail = self.detail
        if self.kind == "member_joined":
            return f"member {detail.get('node_id')} joined"
        if self.kind == "member_left":
            return f"member {detail.get('node_id')} left"
        if self.kind == "leader_changed":
            if detail.get("leader") is None:
                return "leader changed: no leader"
            return f"leader changed: {detail.get('leader')} (epoch {detail.get('epoch')})"
        if self.kind == "quorum_lost":
            reason = detail.get("reason")
            return "quorum lost" + (f": {reason}" if reason else "")
        if self.kind == "key_restored":
            return f"{detail.get('what')} key {detail.get('key')} was gone; written again"
        if self.kind == "quorum_regained":
            return "quorum regained"
        return f"{self.kind} {dict(detail)}"


def membership_changes(
    revision: int,
    before: Set[str],
    after: Set[str],
    leader_before: tuple[str | None, int | None],
    leader_after: tuple[str | None, int | None],
) -> list[ClusterEvent]:
    """The events that take a cluster from `before` (members, leader and epoch) to `after`:
    the one definition behind the daemon's view diff and `status --watch`'s catching up."""
    events = [
        ClusterEvent("member_joined", revision, {"node_id": node_id})
        for node_id in sorted(after - before)
    ]
    events += [
        ClusterEvent("member_left", revision, {"node_id": node_id})
        for node_id in sorted(before - after)
    ]
    if leader_before != leader_after:
        leader, epoch = leader_after
        events.append(ClusterEvent("leader_changed", revision, {"leader": leader, "epoch": epoch}))
    return events


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
