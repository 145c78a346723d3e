"""Registering the member key: a record left by an earlier instance of this sidecar on this
host is waited out; one held by any other live process is refused at once (rule 6)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sidecar.keys import Keys
from sidecar.membership import DuplicateNode, MemberRecord, register
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
    async with asyncio.timeout(MIN_LEASE_TTL + 3):
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
        async with asyncio.timeout(1):
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
