"""Registering the member key: a record left by an earlier instance of this sidecar on this
host is waited out; one held by any other live process is refused at once (rule 6)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar.asyncio_compat import timeout
from sidecar.keys import Keys
from sidecar.membership import DuplicateNode, register
from sidecar.records import MemberRecord
from sidecar.session import Session
from sidecar.store.memory import MIN_LEASE_TTL, MemoryStore

KEYS = Keys("unit")


def this_process(node_id: str = "hetzner-cpu1") -> MemberRecord:
    return MemberRecord.for_this_process(
        node_id, advertise=(), discovered=(), labels={}, eligible=False
    )


async def test_a_record_with_our_pid_on_our_host_is_waited_out() -> None:
    """A sidecar container restarted after kill -9: the same hostname (the container's), the
    same pid (1), and the dead instance's lease still running out."""
    store = MemoryStore()
    earlier = await Session.open(store, MIN_LEASE_TTL)
    await register(store, KEYS, this_process(), earlier)  # then never kept alive again
    started = time.monotonic()
    now = await Session.open(store, 60)
    async with timeout(MIN_LEASE_TTL + 3):
        await register(store, KEYS, this_process(), now)
    held = (await store.get(KEYS.member("hetzner-cpu1"))).kvs[0]
    assert held.lease == now.lease_id
    assert time.monotonic() - started <= MIN_LEASE_TTL + 2


async def test_a_record_from_another_host_is_refused_at_once() -> None:
    store = MemoryStore()
    other = await Session.open(store, 60)
    elsewhere = this_process().model_copy(update={"hostname": "some-other-host"})
    await register(store, KEYS, elsewhere, other)
    ours = await Session.open(store, 60)
    with pytest.raises(DuplicateNode, match="on host some-other-host"):
        async with timeout(1):
            await register(store, KEYS, this_process(), ours)


def test_an_unreadable_orchestrator_entry_leaves_the_rest_of_the_record() -> None:
    """A newer sidecar may publish another shape; the member must still count and show."""
    raw = b'{"node_id": "vast-29118471", "labels": {"gpu": "4090"}, "orchestrator": "up"}'
    record = MemberRecord.decode(raw)
    assert record is not None
    assert (record.node_id, record.labels, record.orchestrator) == (
        "vast-29118471", {"gpu": "4090"}, None,
    )  # fmt: skip
    newer = b'{"node_id": "n", "orchestrator": {"healthy": true, "detail": "ok", "since": "t"},'
    assert MemberRecord.decode(newer + b' "gpus": 8}') is not None  # unknown fields: ignored


async def test_a_record_on_no_lease_is_replaced_not_obeyed() -> None:
    """Rule 12: a forged record put with no lease holds nothing alive; it used to make every
    start exit 1 ("already registered by pid 1 on host evil ... lease 0")."""
    store = MemoryStore()
    forged = MemberRecord(node_id="hetzner-cpu1", hostname="evil", pid=1)
    await store.put(KEYS.member("hetzner-cpu1"), forged.encode())
    ours = await Session.open(store, 60)
    async with timeout(1):
        await register(store, KEYS, this_process(), ours)
    held = (await store.get(KEYS.member("hetzner-cpu1"))).kvs[0]
    assert held.lease == ours.lease_id
    record = MemberRecord.decode(held.value)
    assert record is not None
    assert record.hostname != "evil"


async def test_a_predecessor_named_by_our_lock_token_is_revoked_at_once() -> None:
    """The token our lock file held proves its writer dead: no wait for its lease at all."""
    store = MemoryStore()
    dead = await Session.open(store, 60)  # a long lease: waiting it out would time out below
    before = this_process().model_copy(update={"instance": "0123abcd", "pid": 999_999})
    await register(store, KEYS, before, dead)
    ours = await Session.open(store, 60)
    async with timeout(1):
        await register(store, KEYS, this_process(), ours, previous_instances=("0123abcd",))
    held = (await store.get(KEYS.member("hetzner-cpu1"))).kvs[0]
    assert held.lease == ours.lease_id


async def test_a_live_holder_with_another_token_is_still_refused() -> None:
    store = MemoryStore()
    other = await Session.open(store, 60)
    elsewhere = this_process().model_copy(update={"hostname": "other", "instance": "ffff"})
    await register(store, KEYS, elsewhere, other)
    ours = await Session.open(store, 60)
    with pytest.raises(DuplicateNode):
        async with timeout(1):
            await register(store, KEYS, this_process(), ours, previous_instances=("0123abcd",))


async def test_waiting_out_a_predecessor_survives_its_key_vanishing_mid_wait() -> None:
    """The old loop raised DuplicateNode when its last wait ended because the key *was*
    deleted; the key being gone is exactly when to register."""
    store = MemoryStore()
    earlier = await Session.open(store, 60)
    await register(store, KEYS, this_process(), earlier)
    ours = await Session.open(store, 60)

    async def revoke_soon() -> None:
        await asyncio.sleep(0.3)
        await store.lease_revoke(earlier.lease_id)

    async with timeout(3):
        await asyncio.gather(
            revoke_soon(), register(store, KEYS, this_process(), ours, patience_s=2)
        )
    held = (await store.get(KEYS.member("hetzner-cpu1"))).kvs[0]
    assert held.lease == ours.lease_id


def test_records_are_size_capped() -> None:
    """Rule 14: a record is a few hundred bytes; a megabyte under a member key is not one."""
    padded = MemberRecord(node_id="n", labels={"x": "y" * 20_000}).encode()
    assert MemberRecord.decode(padded) is None
