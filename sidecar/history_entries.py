"""The cluster history's entries (decision 0023): their keys, their values, and which ones a
reader believes.

Each leader records under its own node id:
`/ringside-history/<cluster>/<writer>/<revision, 20 digits>-<kind>-<subject>`, a JSON event
with `by` (the writer) and `epoch` (the epoch it led at). etcd's RBAC lets each eligible node
write its own part only, so the key says who wrote an entry. Everything read back is hostile
input (rule 14); an entry is believed only when

- its writer element is a node id and the value's `by` names the same node;
- its key and value agree (revision, kind, subject) and are well formed;
- etcd wrote it after the revision it reports and after the epoch it claims
  (`mod_revision`, which etcd stamps and no client can forge);
- its writer declared that epoch: the writer's own entries hold its leader change to itself
  at that epoch, which an honest leader records first (an entry claiming an epoch its writer
  never said it led is a forgery or a fragment).

The same event recorded by several leaders (each records what it saw, decision 0023) is
shown once, with every writer. Reads are bounded per writer and in total; a flood under one
writer neither hides the others nor costs more than a few bounded reads.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, TypeGuard

from sidecar.events import EVENT_KINDS, ClusterEvent, Recorder
from sidecar.keys import Keys
from sidecar.records import json_object
from sidecar.settings import DNS_LABEL
from sidecar.store.base import Store
from sidecar.store.model import KeyValue

log = logging.getLogger(__name__)

MAX_EVENT_BYTES: Final = 4096
REVISION_DIGITS: Final = 20
PER_WRITER_READ: Final = 12_000  # a writer keeps 10,000 (`Bounds`), and its declarations
TOTAL_READ: Final = 40_000  # one read while the whole history is below this
MAX_WRITERS: Final = 32  # eligible nodes are the few voters; more writers is a flood
_LEGACY: Final = re.compile(r"\d{20}-.*", re.DOTALL)  # `<revision>-<kind>-<subject>`, no writer


@dataclass(frozen=True)
class Entry:
    """One believable-looking entry: `writer` recorded `event` while leading at `epoch`."""

    writer: str
    epoch: int
    event: ClusterEvent

    @property
    def declares(self) -> bool:
        """Whether this is its writer's own leader change at its epoch: what backs every
        other entry of that epoch."""
        detail = self.event.detail
        return (
            self.event.kind == "leader_changed"
            and detail.get("leader") == self.writer
            and detail.get("epoch") == self.epoch
        )


@dataclass
class HistoryRead:
    """What a read of the history found: the events believed, and what was left out, by why
    (`legacy`: the layout before 0023; `junk`: not an entry; `forged`: `by` names another
    node; `undeclared`: an epoch its writer never declared; `over_cap`/`unread`: beyond the
    read bounds)."""

    events: list[ClusterEvent] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """One line for an operator, empty when nothing was left out."""
        if not self.skipped:
            return ""
        parts = ", ".join(f"{why} {n}" for why, n in sorted(self.skipped.items()))
        return f"left out {sum(self.skipped.values())} history entries ({parts}); see decision 0023"


def subject_of(event: ClusterEvent) -> str:
    return str(event.detail.get("node_id") or event.detail.get("leader") or "")


def entry_key(keys: Keys, writer: str, event: ClusterEvent) -> str:
    """The key of `event` in `writer`'s part: its revision, kind and subject, so one event
    has one key per writer, and writing it twice is harmless."""
    return f"{keys.history_of(writer)}{event.revision:020d}-{event.kind}-{subject_of(event)}"


def encode_entry(event: ClusterEvent, *, by: str, epoch: int) -> bytes:
    return json.dumps({**event.document(), "by": by, "epoch": epoch}).encode()


def decode_event(raw: bytes) -> ClusterEvent | None:
    """The event in `raw`, or None when it is not one (hostile input: rule 14)."""
    document = json_object(raw, MAX_EVENT_BYTES)
    if document is None:
        return None
    kind, revision, at = document.get("kind"), document.get("revision"), document.get("at")
    detail = document.get("detail", {})
    if kind not in EVENT_KINDS or not isinstance(detail, dict):
        return None
    if not _positive(revision) or not isinstance(at, int | float) or isinstance(at, bool):
        return None
    if not 0 <= at < 2**40:
        return None
    plain = {str(k): v for k, v in detail.items() if v is None or isinstance(v, str | int | float)}
    return ClusterEvent(str(kind), revision, plain, float(at))


def parse_entry(keys: Keys, kv: KeyValue) -> Entry | str:
    """The entry stored at `kv`, or why it is not one (a `HistoryRead.skipped` reason)."""
    rest = kv.key.removeprefix(keys.history)
    writer, slash, name = rest.partition("/")
    if not slash:
        return "legacy" if _LEGACY.fullmatch(rest) else "junk"
    head = name.partition("-")[0]
    if not DNS_LABEL.fullmatch(writer) or not (len(head) == REVISION_DIGITS and head.isdigit()):
        return "junk"
    event, document = decode_event(kv.value), json_object(kv.value, MAX_EVENT_BYTES)
    if event is None or document is None:
        return "junk"
    by, epoch = document.get("by"), document.get("epoch")
    if by != writer:
        return "forged"
    if not _positive(epoch) or kv.key != entry_key(keys, writer, event):
        return "junk"
    if not (event.revision < kv.mod_revision and epoch < kv.mod_revision):
        return "junk"  # says it happened, or its writer led, after etcd stored it
    return Entry(writer, epoch, event)


def believed(entries: Iterable[Entry], skipped: Counter[str]) -> list[Entry]:
    """The entries whose epoch their writer declared (counting the others in `skipped`)."""
    entries = list(entries)
    declared = {(e.writer, e.epoch) for e in entries if e.declares}
    kept = [e for e in entries if (e.writer, e.epoch) in declared]
    if len(kept) < len(entries):
        skipped["undeclared"] += len(entries) - len(kept)
    return kept


def merged(entries: Iterable[Entry]) -> list[ClusterEvent]:
    """One event per happening, with every writer that recorded it, in history order. The
    same event seen by two leaders differs only in `at` (each node's clock): the earliest
    epoch's copy is kept."""
    by_event: dict[tuple[int, str, str, str], list[Entry]] = {}
    for e in sorted(entries, key=lambda e: (e.epoch, e.writer)):
        detail = json.dumps(dict(e.event.detail), sort_keys=True)
        by_event.setdefault((e.event.revision, e.event.kind, subject_of(e.event), detail), [])
        by_event[(e.event.revision, e.event.kind, subject_of(e.event), detail)].append(e)
    events = []
    for key in sorted(by_event):
        copies = by_event[key]
        writers = tuple(sorted({Recorder(c.writer, c.epoch) for c in copies}))
        events.append(replace(copies[0].event, recorded_by=writers))
    return events


async def read_recorded(
    store: Store, keys: Keys, *, since: float = 0.0, node: str | None = None
) -> HistoryRead:
    """The believed events at or after unix time `since` (about `node`, when given), oldest
    first, and what was left out."""
    skipped: Counter[str] = Counter()
    entries: list[Entry] = []
    for kv in await _bounded_read(store, keys, skipped):
        entry = parse_entry(keys, kv)
        if isinstance(entry, Entry):
            entries.append(entry)
        else:
            skipped[entry] += 1
    events = merged(believed(entries, skipped))
    wanted = [e for e in events if e.at >= since and (node is None or _about(e, node))]
    return HistoryRead(wanted, skipped)


async def read_history(
    store: Store, keys: Keys, *, since: float = 0.0, node: str | None = None
) -> list[ClusterEvent]:
    """`read_recorded`'s events; what was left out goes to the log."""
    read = await read_recorded(store, keys, since=since, node=node)
    if read.skipped:
        log.info("cluster history: %s", read.summary())
    return read.events


async def _bounded_read(store: Store, keys: Keys, skipped: Counter[str]) -> list[KeyValue]:
    """At most `PER_WRITER_READ` newest keys of each of at most `MAX_WRITERS` writers, plus
    the keys outside any writer's part. Usually one read. When the history holds more than
    `TOTAL_READ` keys (a flood), the writers are found at both ends of the key order, where
    one flooding writer cannot hide anyone else, and each is read on its own."""
    whole = await store.get(keys.history, prefix=True, limit=TOTAL_READ)
    if whole.total <= len(whole.kvs):
        by_writer: dict[str, list[KeyValue]] = {}
        outside: list[KeyValue] = []
        for kv in whole.kvs:
            writer = _writer_of(keys, kv.key)
            (by_writer.setdefault(writer, []) if writer else outside).append(kv)
        writers = sorted(by_writer)
        for extra in writers[MAX_WRITERS:]:
            _count(skipped, "unread", len(by_writer[extra]))
        kept = outside
        for writer in writers[:MAX_WRITERS]:
            own = by_writer[writer]
            _count(skipped, "over_cap", len(own) - PER_WRITER_READ)
            kept += own[-PER_WRITER_READ:]
        return kept
    tail = await store.get(keys.history, prefix=True, limit=TOTAL_READ, newest_first=True)
    named = {_writer_of(keys, kv.key) for kv in (*whole.kvs, *tail.kvs)}
    writers = sorted(w for w in named if w)[:MAX_WRITERS]
    found: list[KeyValue] = []
    for writer in writers:
        part = await store.get(
            keys.history_of(writer), prefix=True, limit=PER_WRITER_READ, newest_first=True
        )
        _count(skipped, "over_cap", part.total - len(part.kvs))
        found += reversed(part.kvs)
    _count(skipped, "unread", whole.total - len(found) - skipped["over_cap"])
    return found


def _count(skipped: Counter[str], why: str, n: int) -> None:
    if n > 0:
        skipped[why] += n


def _writer_of(keys: Keys, key: str) -> str:
    """The writer element of `key` when it is a node id, else ""."""
    writer, slash, _ = key.removeprefix(keys.history).partition("/")
    return writer if slash and DNS_LABEL.fullmatch(writer) else ""


def _about(event: ClusterEvent, node: str) -> bool:
    return node in (event.detail.get("node_id"), event.detail.get("leader"), event.detail.get("to"))


def _positive(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
