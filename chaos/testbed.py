"""What the campaign hurts: a 3-member etcd on loopback, and five sidecars that each reach it
through a route of their own (`tests.blackhole`), so one sidecar can be cut off alone.

Three sidecars are leader-eligible (`hetzner-cpu1..3`), two are not. Each keeps its node id,
lock file and log across restarts. Everything is on 127.0.0.1. `close()` stops the sidecars,
the proxies and (when the testbed started it) etcd, whatever state they are in; sidecars run
in sessions of their own and die with this process (`Fleet(detached=True)`), etcd members too
(`LocalEtcdCluster`).
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

from sidecar.testing.localcluster import LocalEtcdCluster
from tests.blackhole import Proxies, Route
from tests.fleet import Fleet, Sidecar

ELIGIBLE = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")
NOT_ELIGIBLE = ("lambda-gh200-3", "vast-29118471")
NODES = ELIGIBLE + NOT_ELIGIBLE
PROXY_DRAIN_S = 0.3
VALIDITY_MARGIN_S = 2.0  # the design's default, set explicitly so the checks know it


class Testbed:
    def __init__(self, workdir: Path, ttl: int, etcd: LocalEtcdCluster | None = None) -> None:
        self.workdir = workdir
        self.ttl = ttl
        self.margin = min(VALIDITY_MARGIN_S, ttl / 2)
        self._own_etcd = etcd is None
        self.etcd = etcd if etcd is not None else LocalEtcdCluster(workdir / "etcd")
        self.proxies: Proxies | None = None
        self.fleet = Fleet(self.etcd, workdir, lease_ttl=ttl, detached=True)
        self.routes: dict[str, Route] = {}

    def start(self) -> None:
        """Start etcd (when ours) and the proxies, then the sidecars (from this thread: their
        parent-death signal follows it)."""
        if self._own_etcd:
            self.etcd.start()
        self.proxies = Proxies()
        for name in NODES:
            route = self.proxies.route(self.etcd.client_urls)
            self.routes[name] = route
            self.fleet.add(
                name,
                eligible=name in ELIGIBLE,
                settings={"leader": {"validity_margin": self.margin}},
                env={"RINGSIDE_ETCD_ENDPOINTS": ",".join(route.urls)},
            )

    @property
    def sidecars(self) -> dict[str, Sidecar]:
        return self.fleet.sidecars

    def close(self) -> None:
        """Stop everything; safe to call twice and after a partial start."""
        for sidecar in self.fleet.sidecars.values():
            process = sidecar.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                with contextlib.suppress(Exception):
                    process.wait(5)
        if self._own_etcd:
            self.etcd.close()
        if self.proxies is not None:
            for route in self.routes.values():  # a cut pump waits on its cut, not on a read
                with contextlib.suppress(Exception):
                    route.heal()
            # Both ends are gone or going: let the pumps see their end of stream rather than
            # be cancelled mid-read (asyncio prints each of those).
            time.sleep(PROXY_DRAIN_S)
            self.proxies.close()
            self.proxies = None
