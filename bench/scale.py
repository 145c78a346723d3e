"""Many members in one process: N membership sessions, each with its own lease, member key,
keepalives every TTL/3 and its own watch.

This finds where etcd or the client saturates on this 2-core machine: the keepalive round trips
per second actually achieved against the rate N sessions need, the time one put takes to reach
all N watchers (fan-out), and what etcd spends in CPU and memory meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from typing import Any

import psutil

from bench.stats import Figure
from sidecar.keys import Keys
from sidecar.store.errors import LeaseNotFound, StoreError
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import EventType
from sidecar.testing.localcluster import LocalEtcdCluster

BATCH = 50


class ScaleRun:
    """One run with `n` simulated members against `cluster`."""

    def __init__(
        self,
        cluster: LocalEtcdCluster,
        n: int,
        ttl: int,
        *,
        keys: Keys | None = None,
        store: EtcdStore | None = None,
    ) -> None:
        """`keys` and `store` (closed by the run): a given cluster name and a client with TLS
        or credentials of its own; by default a fresh name and a plain client. The store must
        be able to write the member and probe keys, and delete them afterwards."""
        self.cluster, self.n, self.ttl = cluster, n, ttl
        self.keys = keys or Keys(f"bench-scale-{n}-{uuid.uuid4().hex[:6]}")
        self.store = store or EtcdStore.connect(cluster.client_urls)
        self.latency = Figure(f"keepalive round trip, {n} sessions", "ms")
        self.fanout = Figure(f"watch fan-out to {n} watchers", "ms")
        self.ok = self.failed = 0
        self._arrivals: dict[str, int] = {}
        self._all_arrived: dict[str, asyncio.Event] = {}
        self._pinned = 0  # watches that have fixed their start revision
        self._last_put = 0.0  # time.monotonic() of the last warm-up put
        self._leases: list[int] = []
        self._timed_from = self._end = math.inf  # the timed window, once every session runs

    async def _watch(self) -> None:
        async with self.store.watch(self.keys.prefix + "probe/", prefix=True) as batches:
            self._pinned += 1
            async for batch in batches:
                for event in batch.events:
                    if event.type is EventType.PUT:
                        key = event.kv.key
                        self._arrivals[key] = self._arrivals.get(key, 0) + 1
                        if self._arrivals[key] == self.n:
                            self._all_arrived.setdefault(key, asyncio.Event()).set()

    async def _keepalive(self, lease_id: int) -> None:
        """Keep one session's lease alive every TTL/3 from its registration to the end of the
        run; only the keepalives sent in the timed window count."""
        period = self.ttl / 3
        next_at = time.monotonic() + period * (lease_id % 997) / 997  # spread the sessions
        while next_at < self._end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.monotonic()
            timed = started >= self._timed_from
            try:
                await self.store.lease_keepalive(lease_id)
                if timed:
                    self.ok += 1
                    self.latency.samples.append((time.monotonic() - started) * 1000)
            except StoreError:
                self.failed += 1 if timed else 0
            next_at = started + period

    async def _probe(self, number: int) -> None:
        key = f"{self.keys.prefix}probe/{number}"
        arrived = self._all_arrived.setdefault(key, asyncio.Event())
        put_at = time.monotonic()
        await self.store.put(key, b"")
        try:
            await asyncio.wait_for(arrived.wait(), 10)
            self.fanout.samples.append((time.monotonic() - put_at) * 1000)
        except asyncio.TimeoutError:
            self.fanout.note = "some probes did not reach every watcher within 10 s"

    async def _open_watches(self, watchers: list[asyncio.Task[None]], within_s: float) -> None:
        """Start the N watches (into `watchers`) 50 at a time, each batch open before the next
        starts: all at once, 1,000 TLS handshakes starve every other request of this process
        past its deadline. A batch is open when a warm-up put has reached every watcher so
        far, put once every watch of the batch has pinned its start revision (a watch that pinned
        after the put would never see it)."""
        deadline = time.monotonic() + within_s
        warm_ups = itertools.count()
        while len(watchers) < self.n:
            more = min(BATCH, self.n - len(watchers))
            watchers += [asyncio.create_task(self._watch()) for _ in range(more)]
            while self._pinned < len(watchers) and time.monotonic() < deadline:
                self._check(watchers)
                await asyncio.sleep(0.005)
            while not await self._reaches_all(watchers, f"warm-up-{next(warm_ups)}", deadline):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(watchers)} watches not open within {within_s:g} s")

    def _check(self, watchers: list[asyncio.Task[None]]) -> None:
        """Raise if a watch has ended (it failed: they run until cancelled)."""
        if ended := [task for task in watchers if task.done()]:
            raise RuntimeError(f"{len(ended)} of {self.n} watches ended: {ended[0].exception()!r}")

    async def _reaches_all(self, watchers: list[asyncio.Task[None]], name: str, by: float) -> bool:
        """Whether a put of probe key `name` reaches every watcher within 1 s (or by `by`)."""
        self._check(watchers)
        key = f"{self.keys.prefix}probe/{name}"
        await self.store.put(key, b"")
        self._last_put = time.monotonic()
        until = min(by, time.monotonic() + 1.0)
        while self._arrivals.get(key, 0) < len(watchers):
            if time.monotonic() > until:
                return False
            await asyncio.sleep(0.005)
        return True

    async def _settle(self, watchers: list[asyncio.Task[None]], within_s: float) -> None:
        """Let the watches' first status probes pass before timing. A watch that has heard
        nothing for its probe interval asks its member for its status: here all N at once,
        and the first time over N new connections (over TLS, N handshakes). So: wait until
        every watch has been quiet for its probe interval (the last warm-up put reached them
        all within 1 s), then until a put reaches every watcher within 1 s again."""
        quiet_until = self._last_put + 1.0 + self.store.watch_probe_interval
        await asyncio.sleep(max(0.0, quiet_until - time.monotonic()))
        deadline = time.monotonic() + within_s
        settles = itertools.count()
        while not await self._reaches_all(watchers, f"settle-{next(settles)}", deadline):
            if time.monotonic() > deadline:
                raise RuntimeError(f"watchers not answering within 1 s after {within_s:g} s")

    async def _register(self, keepers: list[asyncio.Task[None]]) -> None:
        """Register the N sessions 50 at a time (thousands at once only measure the client's
        own queue), each keeping its lease alive from then on, as a node does: registering
        1,000 sessions over TLS takes most of a TTL, and a lease granted first would expire
        before a keepalive loop started only after the last one."""
        for start in range(0, self.n, BATCH):
            batch = range(start, min(start + BATCH, self.n))
            leases = await asyncio.gather(*(self.store.lease_grant(self.ttl) for _ in batch))
            await asyncio.gather(
                *(
                    self.store.put(self.keys.member(f"sim-{i}"), b"{}", lease=lease.id)
                    for i, lease in zip(batch, leases, strict=True)
                )
            )
            self._leases += [lease.id for lease in leases]
            keepers += [asyncio.create_task(self._keepalive(lease.id)) for lease in leases]

    async def _revoke(self, lease_id: int) -> None:
        with contextlib.suppress(LeaseNotFound):  # it expired: a keepalive failed
            await self.store.lease_revoke(lease_id)

    async def run(self, duration_s: float) -> dict[str, Any]:
        etcd = [psutil.Process(m.process.pid) for m in self.cluster.members if m.process]
        watchers: list[asyncio.Task[None]] = []
        keepers: list[asyncio.Task[None]] = []
        try:
            await self._open_watches(watchers, within_s=120)
            await self._register(keepers)
            await self._settle(watchers, within_s=60)
            cpu_before = sum(sum(p.cpu_times()[:2]) for p in etcd)
            started = time.monotonic()
            self._timed_from, self._end = started, started + duration_s
            for number in range(int(duration_s // 2) - 1):
                await asyncio.sleep(2.0)
                await self._probe(number)
            await asyncio.gather(*keepers)
            elapsed = time.monotonic() - started
            cpu = sum(sum(p.cpu_times()[:2]) for p in etcd) - cpu_before
            rss = sum(p.memory_info().rss for p in etcd)
        finally:
            for task in watchers + keepers:
                task.cancel()
            await asyncio.gather(*watchers, *keepers, return_exceptions=True)
            # Revoked, not left to expire during the next run; the member and probe keys, not
            # the whole prefix: a node-shaped role may write only those (bench/security.py).
            for start in range(0, len(self._leases), BATCH):
                await asyncio.gather(*map(self._revoke, self._leases[start : start + BATCH]))
            await self.store.delete(self.keys.members, prefix=True)
            await self.store.delete(self.keys.prefix + "probe/", prefix=True)
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
