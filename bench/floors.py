"""What etcd itself costs on this machine, measured in the same run: the floors ringside's
figures are compared with. A sidecar cannot notice a change faster than etcd can tell a
watcher on another member about it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.stats import Figure
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import EventType
from sidecar.testing.localcluster import EtcdMember, LocalEtcdCluster

WARM_UP_S = 30.0  # for the watch streams to open and the clients to log in


async def _watcher(store: EtcdStore, prefix: str, kind: EventType, seen: dict[str, float]) -> None:
    async with store.watch(prefix, prefix=True) as batches:
        async for batch in batches:
            for event in batch.events:
                if event.type is kind:
                    seen[event.kv.key] = time.monotonic()


async def _arrival(seen: dict[str, float], key: str, within_s: float = 5.0) -> float:
    deadline = time.monotonic() + within_s
    while key not in seen:
        if time.monotonic() > deadline:
            raise TimeoutError(f"watcher never saw {key}")
        await asyncio.sleep(0.0005)
    return seen[key]


async def _seen_once(
    seen: dict[str, float], change: Callable[[str], Awaitable[Any]], prefix: str
) -> None:
    """Make a change to a warm-up key until the watcher sees one: then its stream is open and
    both clients are logged in (when the cluster wants credentials). A watch pins its start
    revision before its stream opens, so it may miss a change made before that."""
    deadline = time.monotonic() + WARM_UP_S
    for attempt in itertools.count():
        key = f"{prefix}warm-{attempt}"
        await change(key)
        with contextlib.suppress(asyncio.TimeoutError):
            await _arrival(seen, key, within_s=1.0)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the watcher saw no change under {prefix} in {WARM_UP_S:g} s")


def _revoked(writer: EtcdStore) -> Callable[[str], Awaitable[None]]:
    """A change that a delete watcher sees: a key put on a lease of its own, then revoked."""

    async def change(key: str) -> None:
        lease = await writer.lease_grant(10)
        await writer.put(key, b"x", lease=lease.id)
        await writer.lease_revoke(lease.id)

    return change


async def measure_floors(
    cluster: LocalEtcdCluster,
    samples: int = 200,
    *,
    connect: Callable[[list[str]], EtcdStore] = EtcdStore.connect,
    on: tuple[EtcdMember, EtcdMember] | None = None,
) -> dict[str, Figure]:
    """put latency, put -> watch on another member, lease revoke -> delete seen elsewhere.
    `connect` makes the two clients (TLS files, credentials: bench/secure.py); `on` names the
    writer's member and the watcher's (by default the first two)."""
    write_on, read_on = on or (cluster.members[0], cluster.members[1])
    writer = connect([write_on.client_url])
    reader = connect([read_on.client_url])
    prefix = f"/bench/floor/{uuid.uuid4().hex[:8]}/"
    put = Figure("etcd put", "ms")
    put_watch = Figure("etcd put seen by a watcher on another member", "ms")
    revoke_delete = Figure("etcd lease revoke seen as a delete on another member", "ms")
    puts: dict[str, float] = {}
    deletes: dict[str, float] = {}
    tasks = [
        asyncio.create_task(_watcher(reader, prefix + "p/", EventType.PUT, puts)),
        asyncio.create_task(_watcher(reader, prefix + "r/", EventType.DELETE, deletes)),
    ]
    try:
        await _seen_once(puts, lambda key: writer.put(key, b"x"), prefix + "p/")
        await _seen_once(deletes, _revoked(writer), prefix + "r/")
        for i in range(samples):
            key = f"{prefix}p/{i}"
            started = time.monotonic()
            await writer.put(key, b"x")
            put.samples.append((time.monotonic() - started) * 1000)
            put_watch.samples.append((await _arrival(puts, key) - started) * 1000)
        for i in range(max(20, samples // 4)):
            key = f"{prefix}r/{i}"
            lease = await writer.lease_grant(10)
            await writer.put(key, b"x", lease=lease.id)
            started = time.monotonic()
            await writer.lease_revoke(lease.id)
            revoke_delete.samples.append((await _arrival(deletes, key) - started) * 1000)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writer.delete(prefix, prefix=True)
        await writer.close()
        await reader.close()
    return {"put": put, "put_watch": put_watch, "revoke_delete": revoke_delete}
