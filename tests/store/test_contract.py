"""The store contract (`sidecar.store.base`), run on every `Store` implementation.

Each test works under its own random `prefix`, so the etcd run can share one cluster. Tests
that count revisions assume nobody else writes to that cluster while they run (pytest runs
them one at a time, and every test revokes the leases it grants).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from sidecar.store.base import Store
from sidecar.store.errors import Compacted, FutureRevision, LeaseNotFound
from sidecar.store.model import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteResult,
    EventType,
    Get,
    KeyValue,
    Lease,
    Put,
    PutResult,
    RangeResult,
    TxnOp,
)
from tests.reads import get_one
from tests.waiting import next_batch, wait_for

pytestmark = pytest.mark.contract  # also run under every other Python by `make test`


async def current_revision(store: Store, prefix: str) -> int:
    return (await store.get(prefix, prefix=True)).revision


async def must_get(store: Store, key: str) -> KeyValue:
    kv = await get_one(store, key)
    assert kv is not None, f"{key} is missing"
    return kv


@contextlib.asynccontextmanager
async def granted(store: Store, ttl: int) -> AsyncIterator[Lease]:
    """A lease that is revoked on the way out, unless the test already ended it."""
    lease = await store.lease_grant(ttl)
    try:
        yield lease
    finally:
        with contextlib.suppress(LeaseNotFound):
            await store.lease_revoke(lease.id)


# --- keys -----------------------------------------------------------------------------------


async def test_put_then_get(store: Store, prefix: str) -> None:
    key = prefix + "a"
    revision = await store.put(key, b"one")

    result = await store.get(key)
    assert result.revision >= revision
    assert [(kv.key, kv.value, kv.mod_revision) for kv in result.kvs] == [(key, b"one", revision)]
    assert (await store.get(prefix + "missing")).kvs == ()


async def test_a_limited_read_keeps_the_first_keys_and_counts_them_all(
    store: Store, prefix: str
) -> None:
    for name in ("b", "a", "d", "c"):
        await store.put(prefix + name, name.encode())
    every = await store.get(prefix, prefix=True)
    assert [kv.key for kv in every.kvs] == [prefix + n for n in "abcd"]
    assert every.total == 4
    first = await store.get(prefix, prefix=True, limit=2)
    assert [kv.key for kv in first.kvs] == [prefix + "a", prefix + "b"]
    assert first.total == 4
    newest = await store.get(prefix, prefix=True, limit=1, newest_first=True)
    assert [kv.key for kv in newest.kvs] == [prefix + "d"]
    assert newest.total == 4
    backwards = await store.get(prefix, prefix=True, newest_first=True)
    assert [kv.key for kv in backwards.kvs] == [prefix + n for n in "dcba"]
    empty = await store.get(prefix + "none/", prefix=True, limit=5)
    assert (empty.kvs, empty.total) == ((), 0)


async def test_each_write_bumps_the_revision_by_one(store: Store, prefix: str) -> None:
    before = await current_revision(store, prefix)
    first = await store.put(prefix + "a", b"1")
    second = await store.put(prefix + "b", b"2")
    assert (first, second) == (before + 1, before + 2)

    assert await store.delete(prefix + "a") == 1
    assert await current_revision(store, prefix) == before + 3
    assert await store.delete(prefix + "a") == 0
    assert await current_revision(store, prefix) == before + 3, "deleting nothing is no write"


async def test_create_mod_revision_and_version(store: Store, prefix: str) -> None:
    key = prefix + "k"
    created = await store.put(key, b"1")
    modified = await store.put(key, b"2")
    kv = await must_get(store, key)
    assert (kv.create_revision, kv.mod_revision, kv.version) == (created, modified, 2)
    assert kv.lease == 0

    await store.delete(key)
    recreated = await store.put(key, b"3")
    kv = await must_get(store, key)
    assert recreated > modified
    assert (kv.create_revision, kv.mod_revision, kv.version) == (recreated, recreated, 1)


async def test_prefix_read_returns_only_the_prefix_in_key_order(store: Store, prefix: str) -> None:
    inside = [prefix + "dir/b", prefix + "dir/B", prefix + "dir/a/x", prefix + "dir/a"]
    outside = [prefix + "dir", prefix + "dir0", prefix + "dis/a", prefix + "di"]
    for key in inside + outside:
        await store.put(key, key.encode())

    result = await store.get(prefix + "dir/", prefix=True)
    assert [kv.key for kv in result.kvs] == sorted(inside, key=str.encode)
    assert all(kv.value == kv.key.encode() for kv in result.kvs)


async def test_delete_counts_keys_and_prefix_delete_spares_siblings(
    store: Store, prefix: str
) -> None:
    for key in ("d/1", "d/2", "d/3", "d0", "e"):
        await store.put(prefix + key, b"x")

    assert await store.delete(prefix + "e") == 1
    assert await store.delete(prefix + "e") == 0
    before = await current_revision(store, prefix)
    assert await store.delete(prefix + "d/", prefix=True) == 3
    assert await current_revision(store, prefix) == before + 1, "one revision for the range"
    assert [kv.key for kv in (await store.get(prefix, prefix=True)).kvs] == [prefix + "d0"]


async def test_historical_read(store: Store, prefix: str) -> None:
    key = prefix + "h"
    first = await store.put(key, b"v1")
    second = await store.put(key, b"v2")
    await store.put(prefix + "other", b"o")
    deleted = (await store.txn((), [Delete(key)])).header.revision

    assert [kv.value for kv in (await store.get(key, revision=first)).kvs] == [b"v1"]
    assert [kv.value for kv in (await store.get(key, revision=second)).kvs] == [b"v2"]
    assert (await store.get(key, revision=deleted)).kvs == ()
    at_second = await store.get(prefix, prefix=True, revision=second)
    assert [(kv.key, kv.version) for kv in at_second.kvs] == [(key, 2)]
    assert await must_get(store, prefix + "other")


async def test_future_revision_read_raises(store: Store, prefix: str) -> None:
    now = await current_revision(store, prefix)
    with pytest.raises(FutureRevision):
        await store.get(prefix, prefix=True, revision=now + 1000)


async def test_compaction_refuses_older_reads_and_watches(store: Store, prefix: str) -> None:
    key = prefix + "c"
    old = await store.put(key, b"old")
    kept = await store.put(key, b"kept")
    await store.compact(kept)

    with pytest.raises(Compacted) as read_error:
        await store.get(key, revision=old)
    assert read_error.value.compact_revision in (0, kept)  # etcd does not say it to reads
    assert [kv.value for kv in (await store.get(key, revision=kept)).kvs] == [b"kept"]

    async with store.watch(key, start_revision=old) as batches:
        with pytest.raises(Compacted) as watch_error:
            await next_batch(batches)
    assert watch_error.value.compact_revision == kept


# --- transactions ---------------------------------------------------------------------------


async def test_absent_then_put_wins_once_and_the_loser_sees_the_holder(
    store: Store, prefix: str
) -> None:
    key = prefix + "lock"

    async def acquire(value: bytes) -> tuple[bool, RangeResult | PutResult | DeleteResult]:
        result = await store.txn([Compare.absent(key)], [Put(key, value)], [Get(key)])
        assert len(result.responses) == 1
        return result.succeeded, result.responses[0]

    won, response = await acquire(b"first")
    assert won
    assert isinstance(response, PutResult)
    assert (await must_get(store, key)).mod_revision == response.header.revision

    won, response = await acquire(b"second")
    assert not won
    assert isinstance(response, RangeResult)
    assert [kv.value for kv in response.kvs] == [b"first"]
    assert (await must_get(store, key)).value == b"first"


async def test_txn_compares_on_value_mod_and_create_revision(store: Store, prefix: str) -> None:
    key = prefix + "k"
    created = await store.put(key, b"v1")
    modified = await store.put(key, b"v2")

    async def holds(guard: Compare) -> bool:
        return (await store.txn([guard], [])).succeeded

    assert await holds(Compare.value_is(key, b"v2"))
    assert not await holds(Compare.value_is(key, b"v1"))
    assert await holds(Compare.modified_at(key, modified))
    assert not await holds(Compare.modified_at(key, created))
    assert await holds(Compare.created_at(key, created))
    assert not await holds(Compare.created_at(key, modified))
    assert not await holds(Compare.absent(key))

    await store.delete(key)
    await store.put(key, b"v3")
    assert not await holds(Compare.created_at(key, created)), "re-made keys are new keys"


async def test_txn_greater_less_and_not_equal(store: Store, prefix: str) -> None:
    key = prefix + "k"
    await store.put(key, b"b")
    await store.put(key, b"b")  # version 2

    async def holds(target: CompareTarget, result: CompareResult, operand: int | bytes) -> bool:
        return (await store.txn([Compare(key, target, result, operand)], [])).succeeded

    assert await holds(CompareTarget.VERSION, CompareResult.GREATER, 1)
    assert not await holds(CompareTarget.VERSION, CompareResult.GREATER, 2)
    assert await holds(CompareTarget.VERSION, CompareResult.LESS, 3)
    assert not await holds(CompareTarget.VERSION, CompareResult.LESS, 2)
    assert await holds(CompareTarget.VERSION, CompareResult.NOT_EQUAL, 1)
    assert not await holds(CompareTarget.VERSION, CompareResult.NOT_EQUAL, 2)
    assert await holds(CompareTarget.VALUE, CompareResult.GREATER, b"a")
    assert await holds(CompareTarget.VALUE, CompareResult.LESS, b"c")


async def test_a_range_compare_holds_for_every_key_under_the_prefix(
    store: Store, prefix: str
) -> None:
    """The guard of a renewal (decision 0022): nothing under a prefix written since the
    revision the writer last saw; an empty range compares as one missing key."""
    area = prefix + "deposals/"

    async def holds(guard: Compare) -> bool:
        return (await store.txn([guard], [])).succeeded

    assert await holds(Compare.none_written_after(area, 0)), "an empty range holds"
    first = await store.put(area + "a", b"1")
    await store.put(prefix + "deposals0", b"beside the range, not in it")
    assert await holds(Compare.none_written_after(area, first))
    second = await store.put(area + "b", b"2")
    assert not await holds(Compare.none_written_after(area, first)), "b is newer"
    assert await holds(Compare.none_written_after(area, second))
    await store.delete(area + "b")
    assert await holds(Compare.none_written_after(area, first)), "a deleted key is gone"


async def test_missing_key_compares_as_zero_and_its_value_compare_fails(
    store: Store, prefix: str
) -> None:
    key = prefix + "missing"

    async def holds(guard: Compare) -> bool:
        return (await store.txn([guard], [])).succeeded

    assert await holds(Compare.absent(key))
    assert await holds(Compare.modified_at(key, 0))
    assert await holds(Compare.lease_is(key, 0))
    assert await holds(Compare(key, CompareTarget.VERSION, CompareResult.EQUAL, 0))
    # etcd fails every value compare on a missing key, even `== b""` and `!= b"x"`.
    assert not await holds(Compare.value_is(key, b""))
    assert not await holds(Compare(key, CompareTarget.VALUE, CompareResult.NOT_EQUAL, b"x"))


async def test_txn_lease_is(store: Store, prefix: str) -> None:
    key = prefix + "k"
    async with granted(store, 10) as lease:
        await store.put(key, b"v", lease=lease.id)
        ours = await store.txn([Compare.lease_is(key, lease.id)], [Put(key, b"renewed", lease.id)])
        assert ours.succeeded
        assert not (await store.txn([Compare.lease_is(key, 0)], [])).succeeded
        assert (await must_get(store, key)).value == b"renewed"


async def test_multi_op_txn_commits_at_one_revision(store: Store, prefix: str) -> None:
    await store.put(prefix + "gone", b"x")
    before = await current_revision(store, prefix)

    result = await store.txn(
        [],
        [
            Put(prefix + "a", b"1"),
            Put(prefix + "b", b"2"),
            Delete(prefix + "gone"),
            Get(prefix + "a"),
        ],
    )

    assert result.succeeded
    assert result.header.revision == before + 1
    put_a, put_b, delete, get = result.responses
    assert isinstance(put_a, PutResult)
    assert isinstance(put_b, PutResult)
    assert isinstance(delete, DeleteResult)
    assert delete.deleted == 1
    assert isinstance(get, RangeResult)
    assert [kv.value for kv in get.kvs] == [b"1"], "a txn reads its own writes"
    kvs = (await store.get(prefix, prefix=True)).kvs
    assert [(kv.key, kv.mod_revision) for kv in kvs] == [
        (prefix + "a", before + 1),
        (prefix + "b", before + 1),
    ]


async def test_txn_that_writes_nothing_spends_no_revision(store: Store, prefix: str) -> None:
    key = prefix + "k"
    await store.put(key, b"v")
    before = await current_revision(store, prefix)

    failed = await store.txn([Compare.absent(key)], [Put(key, b"w")], [Get(key)])
    empty_delete = await store.txn([], [Delete(prefix + "nothing")])

    assert not failed.succeeded
    assert failed.header.revision == before
    assert empty_delete.header.revision == before
    assert (await must_get(store, key)).value == b"v"


# --- leases ---------------------------------------------------------------------------------


async def test_lease_grant_gives_at_least_the_minimum_ttl(store: Store) -> None:
    async with granted(store, 1) as lease:
        assert lease.id > 0
        assert lease.ttl >= 2


async def test_keepalive_and_time_to_live(store: Store, prefix: str) -> None:
    keys = [prefix + "a", prefix + "b"]
    async with granted(store, 10) as lease:
        assert lease.ttl >= 10
        for key in keys:
            await store.put(key, b"v", lease=lease.id)

        assert await store.lease_keepalive(lease.id) == lease.ttl
        info = await store.lease_time_to_live(lease.id, keys=True)
        assert info.id == lease.id
        assert info.granted_ttl == lease.ttl
        assert 0 <= info.ttl <= lease.ttl
        assert sorted(info.keys) == keys
        assert (await store.lease_time_to_live(lease.id)).keys == ()
        assert all(kv.lease == lease.id for kv in (await store.get(prefix, prefix=True)).kvs)


async def test_revoke_deletes_keys_in_one_revision_and_ends_the_lease(
    store: Store, prefix: str
) -> None:
    async with granted(store, 10) as lease:
        for key in ("a", "b"):
            await store.put(prefix + key, b"v", lease=lease.id)
        await store.put(prefix + "free", b"v")
        before = await current_revision(store, prefix)

        await store.lease_revoke(lease.id)

        assert await current_revision(store, prefix) == before + 1
        assert [kv.key for kv in (await store.get(prefix, prefix=True)).kvs] == [prefix + "free"]
        with pytest.raises(LeaseNotFound):
            await store.lease_keepalive(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.lease_time_to_live(lease.id)
        with pytest.raises(LeaseNotFound):
            await store.lease_revoke(lease.id)


async def test_put_with_an_unknown_lease_raises_and_writes_nothing(
    store: Store, prefix: str
) -> None:
    async with granted(store, 10) as lease:
        pass  # revoked on exit: its id is now certainly unknown
    before = await current_revision(store, prefix)

    with pytest.raises(LeaseNotFound):
        await store.put(prefix + "k", b"v", lease=lease.id)
    with pytest.raises(LeaseNotFound):
        await store.txn([], [Put(prefix + "t", b"v"), Put(prefix + "k", b"v", lease.id)])

    assert await current_revision(store, prefix) == before
    assert (await store.get(prefix, prefix=True)).kvs == ()


async def test_lease_expiry_deletes_keys_and_watchers_see_the_delete(
    store: Store, prefix: str
) -> None:
    key = prefix + "ephemeral"
    async with granted(store, 2) as lease:
        written = await store.put(key, b"v", lease=lease.id)
        async with store.watch(key, start_revision=written + 1, prev_kv=True) as batches:
            # Only the watch is awaited: expiry must happen without anyone calling the store.
            batch = await next_batch(batches, within_s=lease.ttl + 3)

        [event] = batch.events
        assert event.type is EventType.DELETE
        assert (event.kv.key, event.kv.mod_revision) == (key, batch.revision)
        assert event.prev_kv is not None
        assert event.prev_kv.value == b"v"

        async def key_gone() -> bool:
            return await get_one(store, key) is None

        await wait_for(key_gone, within_s=1)
        with pytest.raises(LeaseNotFound):
            await store.lease_keepalive(lease.id)


# --- watches --------------------------------------------------------------------------------


async def test_watch_delivers_puts_and_deletes_in_order(store: Store, prefix: str) -> None:
    key = prefix + "w"
    start = await current_revision(store, prefix) + 1
    async with store.watch(prefix, prefix=True, start_revision=start, prev_kv=True) as batches:
        created = await store.put(key, b"v1")
        updated = await store.put(key, b"v2")
        deleted = (await store.txn([], [Delete(key)])).header.revision
        seen = [await next_batch(batches) for _ in range(3)]

    assert [b.revision for b in seen] == [created, updated, deleted]
    assert all(len(b.events) == 1 for b in seen)
    put1, put2, gone = (b.events[0] for b in seen)
    assert (put1.type, put1.kv.value, put1.kv.version, put1.prev_kv) == (
        EventType.PUT,
        b"v1",
        1,
        None,
    )
    assert (put2.type, put2.kv.value, put2.kv.version) == (EventType.PUT, b"v2", 2)
    assert put2.kv.create_revision == created
    assert put2.prev_kv is not None
    assert put2.prev_kv.value == b"v1"
    assert (gone.type, gone.kv.key, gone.kv.mod_revision) == (EventType.DELETE, key, deleted)
    assert gone.prev_kv is not None
    assert (gone.prev_kv.value, gone.prev_kv.mod_revision) == (b"v2", updated)


async def test_concurrent_watchers_each_get_every_event(store: Store, prefix: str) -> None:
    key = prefix + "k"
    start = await current_revision(store, prefix) + 1
    async with (
        store.watch(key, start_revision=start, prev_kv=True) as with_prev,
        store.watch(key, start_revision=start) as without_prev,
    ):
        first = await store.put(key, b"1")
        await store.put(key + "-sibling", b"not for a single-key watch")
        second = await store.put(key, b"2")
        a = [await next_batch(with_prev) for _ in range(2)]
        b = [await next_batch(without_prev) for _ in range(2)]

    assert [x.revision for x in a] == [x.revision for x in b] == [first, second]
    assert [x.events[0].kv.value for x in b] == [b"1", b"2"]
    assert a[1].events[0].prev_kv is not None
    assert all(e.prev_kv is None for x in b for e in x.events)


async def test_watch_replays_from_a_past_revision(store: Store, prefix: str) -> None:
    written = [await store.put(prefix + str(i), str(i).encode()) for i in range(3)]

    async with store.watch(prefix, prefix=True, start_revision=written[1]) as batches:
        replayed = [await next_batch(batches) for _ in range(2)]
        live = await store.put(prefix + "live", b"now")
        after = await next_batch(batches)

    assert [b.revision for b in replayed] == written[1:]
    assert [b.events[0].kv.key for b in replayed] == [prefix + "1", prefix + "2"]
    assert (after.revision, after.events[0].kv.key) == (live, prefix + "live")


async def test_watch_from_zero_sees_only_new_changes(store: Store, prefix: str) -> None:
    await store.put(prefix + "old", b"before the watch")

    async with store.watch(prefix, prefix=True) as batches:
        new = await store.put(prefix + "new", b"after")
        batch = await next_batch(batches)

    assert batch.revision == new
    assert [e.kv.key for e in batch.events] == [prefix + "new"]


async def test_keys_written_in_one_txn_arrive_in_one_batch(store: Store, prefix: str) -> None:
    await store.put(prefix + "c", b"old")
    start = await current_revision(store, prefix) + 1
    async with store.watch(prefix, prefix=True, start_revision=start) as batches:
        ops: list[TxnOp] = [Put(prefix + "b", b"2"), Put(prefix + "a", b"1"), Delete(prefix + "c")]
        result = await store.txn([], ops)
        batch = await next_batch(batches)

    assert batch.revision == result.header.revision
    assert [(e.type, e.kv.key) for e in batch.events] == [
        (EventType.PUT, prefix + "b"),
        (EventType.PUT, prefix + "a"),
        (EventType.DELETE, prefix + "c"),
    ]


# --- the store's own cluster ----------------------------------------------------------------


async def test_members_and_endpoint_status(store: Store, prefix: str) -> None:
    members = await store.members()
    assert members
    assert all(m.id != 0 and m.name and m.client_urls for m in members)

    url = members[0].client_urls[0]
    status = await store.endpoint_status(url)
    read = await store.get(prefix, prefix=True)
    assert status.endpoint == url
    assert status.header.cluster_id == read.header.cluster_id != 0
    assert status.leader in {m.id for m in members}
    assert status.version
    assert status.raft_term >= 1
    assert status.header.revision <= read.revision


async def test_endpoint_states_after_a_request(store: Store, prefix: str) -> None:
    await store.get(prefix, prefix=True)
    states = store.endpoint_states()
    assert states
    assert all(state.url for state in states)
    assert any(state.reachable for state in states)


async def test_stats_carry_the_endpoint_states_and_no_reconnect_yet(
    store: Store, prefix: str
) -> None:
    await store.get(prefix, prefix=True)
    stats = store.stats()
    assert [s.url for s in stats.endpoints] == [s.url for s in store.endpoint_states()]
    assert any(state.reachable for state in stats.endpoints)
    assert stats.watch_reconnects == 0  # nothing was cut: no watch had to resume elsewhere
