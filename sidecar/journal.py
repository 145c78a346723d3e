"""The cluster's history in etcd (decision 0018): what happened, readable after the fact by any
node or laptop with etcd access, whichever sidecars saw it are long gone.

The leader writes it, under `/ringside-history/<cluster>/` (beside the cluster prefix, so the
view every sidecar loads and watches stays small), one key per event:
`<revision, 20 digits>-<kind>-<subject>`, so keys sort by when the event happened and the
same event always gets the same key. Every write is fenced by the leader's candidate key
(its create revision is the epoch): a node that lost the leadership writes nothing.

Every node turns its view changes into the same events (`sidecar.changes`); only the leader
records them. A new leader first reads the newest recorded revision and records what its
own log holds after it, so what happened while there was no leader (the crash that made it
leader, a quorum loss) is recorded once a leader is back. The history is bounded by count and
age (defaults: 10,000 events, 7 days), trimmed oldest first by the leader.

Everything read back is untrusted (rule 14): a value that is not an event is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecar.asyncio_compat import timeout
from sidecar.election import Campaign
from sidecar.event_log import EventLog
from sidecar.events import EVENT_KINDS, ClusterEvent
from sidecar.keys import Keys
from sidecar.store.base import Store
from sidecar.store.errors import StoreError
from sidecar.store.model import Compare, Delete, Put

log = logging.getLogger(__name__)

RECORDED: Final = frozenset(
    {
        "member_joined",
        "member_left",
        "leader_changed",
        "quorum_lost",
        "quorum_regained",
        "orchestrator_down",
        "orchestrator_up",
        "switchover_requested",
        "health_handover",
        "leading_unhealthy",
    }
)
MAX_EVENT_BYTES: Final = 4096
TXN_OPS: Final = 100  # etcd refuses more than 128 operations in one transaction by default
TRIM_EVERY_S: Final = 60.0


@dataclass(frozen=True)
class Bounds:
    """How much history is kept: at most `count` events, none older than `age_s`."""

    count: int = 10_000
    age_s: float = 7 * 86400.0


def event_key(keys: Keys, event: ClusterEvent) -> str:
    """The key of `event`: its revision, kind and subject, so one event has one key."""
    subject = event.detail.get("node_id") or event.detail.get("leader") or ""
    return f"{keys.history}{event.revision:020d}-{event.kind}-{subject}"


def encode_event(event: ClusterEvent, *, by: str, epoch: int) -> bytes:
    return json.dumps({**event.document(), "by": by, "epoch": epoch}).encode()


def decode_event(raw: bytes) -> ClusterEvent | None:
    """The event in `raw`, or None when it is not one (hostile input: rule 14)."""
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    kind, revision, at = document.get("kind"), document.get("revision"), document.get("at")
    detail = document.get("detail", {})
    if kind not in EVENT_KINDS or not isinstance(detail, dict):
        return None
    if not isinstance(revision, int) or isinstance(revision, bool) or revision <= 0:
        return None
    if not isinstance(at, int | float) or isinstance(at, bool) or not 0 <= at < 2**40:
        return None
    plain = {str(k): v for k, v in detail.items() if v is None or isinstance(v, str | int | float)}
    return ClusterEvent(kind, revision, plain, float(at))


async def read_history(
    store: Store, keys: Keys, *, since: float = 0.0, node: str | None = None
) -> list[ClusterEvent]:
    """The recorded events at or after unix time `since` (about `node`, when given), oldest
    first. One read of the whole history: it is bounded (`Bounds`)."""
    found = await store.get(keys.history, prefix=True)
    events = [e for e in (decode_event(kv.value) for kv in found.kvs) if e is not None]
    return [e for e in events if e.at >= since and (node is None or _about(e, node))]


def _about(event: ClusterEvent, node: str) -> bool:
    return node in (event.detail.get("node_id"), event.detail.get("leader"), event.detail.get("to"))


class Journal:
    """Records the agent's cluster events in etcd while the agent leads.

    The agent runs it: `run(lead)` until cancelled, where `lead()` gives our candidacy while
    we lead, else None.
    """

    def __init__(
        self,
        store: Store,
        keys: Keys,
        events: EventLog,
        *,
        node_id: str,
        bounds: Bounds = Bounds(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.keys, self.events = store, keys, events
        self.node_id = node_id
        self.bounds = bounds
        self.clock = clock
        self.recorded_epoch: int | None = None  # the epoch whose catch-up is done
        self._pending: list[ClusterEvent] = []
        self._wake = asyncio.Event()
        self._trimmed_at = 0.0
        events.listen(self._heard)

    def _heard(self, event: ClusterEvent) -> None:
        if recordable(event):
            self._pending.append(event)
            self._wake.set()

    async def run(self, lead: Callable[[], Campaign | None], *, idle_s: float = 1.0) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                async with timeout(idle_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.step(lead())
            except StoreError as e:
                log.debug("cluster history not written yet: %s", e)

    async def step(self, campaign: Campaign | None) -> None:
        """One round as the holder of `campaign` (None: not leading): catch up after becoming
        leader, record what is pending, trim."""
        if campaign is None:
            self.recorded_epoch = None  # not leading: a later leadership catches up again
            self._pending.clear()
            return
        if self.recorded_epoch != campaign.epoch:
            newest = await self.store.get(
                self.keys.history, prefix=True, limit=1, newest_first=True
            )
            after = max((_revision_of(kv.key, self.keys) for kv in newest.kvs), default=0)
            backlog = [e for e in self.events if recordable(e) and e.revision > after]
            self._pending.clear()
            if not await self._write(backlog, campaign):
                return
            self.recorded_epoch = campaign.epoch
        pending, self._pending = self._pending, []
        if not await self._write(pending, campaign):
            return
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            await self.trim(campaign)
            self._trimmed_at = time.monotonic()

    async def _write(self, events: Sequence[ClusterEvent], campaign: Campaign) -> bool:
        """Record `events` while `campaign` leads; False once it is not the leader's key."""
        fence = Compare.created_at(campaign.key, campaign.epoch)
        for batch in _batches(events, TXN_OPS):
            puts = {
                event_key(self.keys, e): encode_event(e, by=self.node_id, epoch=campaign.epoch)
                for e in batch
            }
            ops = [Put(key, value) for key, value in puts.items()]
            if not (await self.store.txn([fence], ops)).succeeded:
                self.recorded_epoch = None
                return False
        return True

    async def trim(self, campaign: Campaign) -> int:
        """Delete the oldest events past the bounds; how many went."""
        oldest = await self.store.get(self.keys.history, prefix=True, limit=TXN_OPS)
        excess = oldest.total - self.bounds.count
        cutoff = self.clock() - self.bounds.age_s
        doomed = []
        for position, kv in enumerate(oldest.kvs):
            event = decode_event(kv.value)
            if position < excess or event is None or event.at < cutoff:
                doomed.append(kv.key)
        if not doomed:
            return 0
        fence = Compare.created_at(campaign.key, campaign.epoch)
        result = await self.store.txn([fence], [Delete(key) for key in doomed])
        return len(doomed) if result.succeeded else 0


def recordable(event: ClusterEvent) -> bool:
    """An event for the history: a cluster change, not the state a sidecar found at start."""
    return event.kind in RECORDED and not event.detail.get("initial")


def _revision_of(key: str, keys: Keys) -> int:
    head = key.removeprefix(keys.history).partition("-")[0]
    return int(head) if head.isdigit() else 0


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
