"""The cluster's history in etcd (decisions 0018, 0023): what happened, readable after the fact
by any node or laptop with etcd access, whichever sidecars saw it are long gone.

The leader writes it, each leader in its own part, `/ringside-history/<cluster>/<node id>/`
(beside the cluster prefix, so the view every sidecar loads and watches stays small), one key
per event: `<revision, 20 digits>-<kind>-<subject>`, so keys sort by when the event happened
and the same event always gets the same key. etcd's RBAC lets a node write its own part only;
every write is also fenced by the leader's candidate key (its create revision is the epoch),
so a node that lost the leadership writes nothing.

Every node turns its view changes into the same events (`sidecar.changes`); only the leader
records them. A leader records its own leader change first (the declaration that backs every
entry of its epoch, `sidecar.history_entries`), then what its log holds after the newest
entry of its own part: what happened while it did not lead (the crash that made it leader, a
quorum loss, another leader's term) is recorded once it leads, whatever the other parts say.
Each leader keeps its part bounded by count and age (defaults: 10,000 events, 7 days), trimmed
oldest first, never touching another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sidecar.asyncio_compat import timeout
from sidecar.election import Campaign
from sidecar.event_log import EventLog
from sidecar.events import ClusterEvent
from sidecar.history_entries import (
    MAX_EVENT_BYTES,
    Entry,
    decode_event,
    encode_entry,
    entry_key,
    parse_entry,
    read_history,
)
from sidecar.keys import Keys
from sidecar.store.base import Store
from sidecar.store.errors import StoreError
from sidecar.store.model import Compare, Delete, Put, RangeResult

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
TXN_OPS: Final = 100  # etcd refuses more than 128 operations in one transaction by default
TRIM_EVERY_S: Final = 60.0


@dataclass(frozen=True)
class Bounds:
    """How much history is kept: at most `count` events, none older than `age_s`."""

    count: int = 10_000
    age_s: float = 7 * 86400.0


class Journal:
    """Records the agent's cluster events in etcd, in our own part, while the agent leads.

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
        self.own = keys.history_of(node_id)
        self.bounds = bounds
        self.clock = clock
        self.recorded_epoch: int | None = None  # the epoch whose catch-up is done
        self._pending: list[ClusterEvent] = []
        self._declaration: ClusterEvent | None = None  # our latest leader change to us
        self._wake = asyncio.Event()
        self._trimmed_at = 0.0
        events.listen(self._heard)

    def _heard(self, event: ClusterEvent) -> None:
        if recordable(event):
            if event.kind == "leader_changed" and event.detail.get("leader") == self.node_id:
                self._declaration = event  # kept apart: the log may drop it while we lead
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
        """One round as the holder of `campaign` (None: not leading): declare and catch up
        after becoming leader, record what is pending, trim our part."""
        if campaign is None:
            self.recorded_epoch = None  # not leading: a later leadership catches up again
            self._pending.clear()
            return
        try:
            if self.recorded_epoch != campaign.epoch:
                self.recorded_epoch = None
                declaration = self._declaration
                if declaration is None or declaration.detail.get("epoch") != campaign.epoch:
                    return  # not until our own leader change is in our log: it backs the rest
                after = await self._newest_own_revision()
                backlog = [e for e in self.events if recordable(e) and e.revision > after]
                self._pending.clear()
                if not await self._write([declaration, *backlog], campaign):
                    return
                self.recorded_epoch = campaign.epoch
            pending, self._pending = self._pending, []
            if not await self._write(pending, campaign):
                return
        except StoreError:
            self.recorded_epoch = None  # what was pending is caught up from our part again
            raise
        if time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            await self.trim(campaign)
            self._trimmed_at = time.monotonic()

    async def _newest_own_revision(self) -> int:
        """The revision of the newest event in our own part: only ours, so no entry anyone
        else wrote can make us skip our catch-up (a key with a huge revision elsewhere used
        to). A key of ours that is no entry (only root could have put it there) is skipped."""
        newest = await self.store.get(self.own, prefix=True, limit=TXN_OPS, newest_first=True)
        entries = [parse_entry(self.keys, kv) for kv in newest.kvs]
        return max(
            (
                e.event.revision
                for e in entries
                if isinstance(e, Entry) and e.writer == self.node_id
            ),
            default=0,
        )

    async def _write(self, events: Sequence[ClusterEvent], campaign: Campaign) -> bool:
        """Record `events` while `campaign` leads; False once it is not the leader's key."""
        fence = Compare.created_at(campaign.key, campaign.epoch)
        for batch in _batches(events, TXN_OPS):
            puts = {
                entry_key(self.keys, self.node_id, e): encode_entry(
                    e, by=self.node_id, epoch=campaign.epoch
                )
                for e in batch
            }
            ops = [Put(key, value) for key, value in puts.items()]
            if not (await self.store.txn([fence], ops)).succeeded:
                self.recorded_epoch = None
                return False
        return True

    async def trim(self, campaign: Campaign) -> int:
        """Delete the oldest events of our own part past the bounds; how many went.

        Our declaration of an epoch (our leader change) stays while we lead at it, and while
        later entries of its epoch do (they are believed only with it): epochs only grow
        along our part, so the next entry tells."""
        oldest = await self.store.get(self.own, prefix=True, limit=TXN_OPS + 1)
        excess = oldest.total - self.bounds.count
        cutoff = self.clock() - self.bounds.age_s
        entries = [parse_entry(self.keys, kv) for kv in oldest.kvs]
        doomed = []
        for position, (kv, entry) in enumerate(zip(oldest.kvs[:TXN_OPS], entries, strict=False)):
            if not isinstance(entry, Entry):
                doomed.append(kv.key)  # not an entry: only root could have put it here
            elif (position < excess or entry.event.at < cutoff) and not (
                entry.declares
                and (
                    entry.epoch == campaign.epoch
                    or _backs_later(entry, entries[position + 1 :], oldest)
                )
            ):
                doomed.append(kv.key)
        if not doomed:
            return 0
        fence = Compare.created_at(campaign.key, campaign.epoch)
        result = await self.store.txn([fence], [Delete(key) for key in doomed])
        return len(doomed) if result.succeeded else 0


def _backs_later(declaration: Entry, later: Sequence[Entry | str], page: RangeResult) -> bool:
    """Whether entries after `declaration` still depend on it: the next entry is of its
    epoch, or the page ends before one shows (then keep it, to be safe)."""
    for entry in later:
        if isinstance(entry, Entry):
            return entry.epoch == declaration.epoch
    return page.total > len(page.kvs)


def recordable(event: ClusterEvent) -> bool:
    """An event for the history: a cluster change, not the state a sidecar found at start."""
    return event.kind in RECORDED and not event.detail.get("initial")


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = [
    "MAX_EVENT_BYTES",
    "Bounds",
    "Journal",
    "decode_event",
    "encode_entry",
    "entry_key",
    "read_history",
    "recordable",
]
