"""Many members in one process: N membership sessions, each with its own lease, member key,
keepalives every TTL/3 and its own watch.

This finds where etcd or the client saturates on this 2-core machine: the keepalive round trips
per second actually achieved against the rate N sessions need, the time one put takes to reach
all N watchers (fan-out), and what etcd spends in CPU and memory meanwhile.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from bench.stats import Figure
from sidecar.keys import Keys
from sidecar.store.errors import StoreError
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import EventType
from sidecar.testing.localcluster import LocalEtcdCluster

BATCH = 50


async def _batched(calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the calls 50 at a time: thousands at once only measure the client's own queue."""
    results: list[Any] = []
    for start in range(0, len(calls), BATCH):
        results += await asyncio.gather(*(call() for call in calls[start : start + BATCH]))
    return results


class ScaleRun:
    """One run with `n` simulated members against `cluster`."""

    def __init__(self, cluster: LocalEtcdCluster, n: int, ttl: int) -> None:
        self.cluster, self.n, self.ttl = cluster, n, ttl
        self.keys = Keys(f"bench-scale-{n}-{uuid.uuid4().hex[:6]}")
        self.store = EtcdStore.connect(cluster.client_urls)
        self.latency = Figure(f"keepalive round trip, {n} sessions", "ms")
        self.fanout = Figure(f"watch fan-out to {n} watchers", "ms")
        self.ok = self.failed = 0
        self._arrivals: dict[str, int] = {}
        self._all_arrived: dict[str, asyncio.Event] = {}

    async def _watch(self) -> None:
        async with self.store.watch(self.keys.prefix + "probe/", prefix=True) as batches:
            async for batch in batches:
                for event in batch.events:
                    if event.type is EventType.PUT:
                        key = event.kv.key
                        self._arrivals[key] = self._arrivals.get(key, 0) + 1
                        if self._arrivals[key] == self.n:
                            self._all_arrived.setdefault(key, asyncio.Event()).set()

    async def _keepalive(self, lease_id: int, end: float) -> None:
        period = self.ttl / 3
        next_at = time.monotonic() + period * (lease_id % 997) / 997  # spread the sessions
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.monotonic()
            try:
                await self.store.lease_keepalive(lease_id)
                self.ok += 1
                self.latency.samples.append((time.monotonic() - started) * 1000)
            except StoreError:
                self.failed += 1
            next_at = started + period

    async def _probe(self, number: int) -> None:
        key = f"{self.keys.prefix}probe/{number}"
        arrived = self._all_arrived.setdefault(key, asyncio.Event())
        put_at = time.monotonic()
        await self.store.put(key, b"")
        try:
            await asyncio.wait_for(arrived.wait(), 10)
            self.fanout.samples.append((time.monotonic() - put_at) * 1000)
        except TimeoutError:
            self.fanout.note = "some probes did not reach every watcher within 10 s"

    def _put_member(self, i: int, lease_id: int) -> Callable[[], Awaitable[int]]:
        return lambda: self.store.put(self.keys.member(f"sim-{i}"), b"{}", lease=lease_id)

    async def _register(self) -> list[int]:
        leases = await _batched([lambda: self.store.lease_grant(self.ttl) for _ in range(self.n)])
        puts = [self._put_member(i, lease.id) for i, lease in enumerate(leases)]
        await _batched(puts)
        return [lease.id for lease in leases]

    async def run(self, duration_s: float) -> dict[str, Any]:
        etcd = [psutil.Process(m.process.pid) for m in self.cluster.members if m.process]
        watchers = [asyncio.create_task(self._watch()) for _ in range(self.n)]
        try:
            leases = await self._register()
            await asyncio.sleep(1.0)  # let the watch streams open before timing anything
            cpu_before = sum(sum(p.cpu_times()[:2]) for p in etcd)
            started = time.monotonic()
            keepers = [
                asyncio.create_task(self._keepalive(lease, started + duration_s))
                for lease in leases
            ]
            for number in range(int(duration_s // 2) - 1):
                await asyncio.sleep(2.0)
                await self._probe(number)
            await asyncio.gather(*keepers)
            elapsed = time.monotonic() - started
            cpu = sum(sum(p.cpu_times()[:2]) for p in etcd) - cpu_before
            rss = sum(p.memory_info().rss for p in etcd)
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await self.store.delete(self.keys.prefix, prefix=True)
            await self.store.close()
        return {
            "sessions": self.n,
            "keepalives_needed_per_s": round(self.n / (self.ttl / 3), 1),
            "keepalives_achieved_per_s": round(self.ok / elapsed, 1),
            "keepalive_failures": self.failed,
            "keepalive_latency": self.latency,
            "watch_fanout": self.fanout,
            "etcd_cpu_cores": round(cpu / elapsed, 2),
            "etcd_rss_mb_total": round(rss / 2**20, 1),
        }
