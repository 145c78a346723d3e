"""One sidecar, seen from its own node: local API latency under load, and what it costs idle.

The API is loaded with `wrk` (Debian's) over loopback while 20 members are in its view. The
footprint is one idle sidecar for a minute: its RSS and CPU seconds, and the etcd requests per
second it causes (from etcd's own `grpc_server_handled_total` on every member).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from sidecar.keys import Keys
from sidecar.records import MemberRecord
from sidecar.store.etcd import EtcdStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import Fleet

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk(url: str, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = {}
    for label in ("50%", "99%"):
        found = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if found:
            result[f"p{label[:-1]}_ms"] = round(float(found[1]) * _UNITS[found[2]], 3)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["requests_per_s"] = float(rate[1]) if rate else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(errors[1]) if errors else 0
    return result


async def local_api(etcd: LocalEtcdCluster, workdir: Path, seconds: int = 10) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    fleet = Fleet(etcd, workdir, lease_ttl=10)
    sidecar = fleet.add("hetzner-cpu1")
    store = EtcdStore.connect(etcd.client_urls)
    keys = Keys(fleet.cluster)
    try:
        lease = await store.lease_grant(60)
        for i in range(19):
            record = MemberRecord(node_id=f"sim-{i:02d}", addresses=("192.0.2.1",))
            await store.put(keys.member(record.node_id), record.encode(), lease=lease.id)
        names = ["hetzner-cpu1", *(f"sim-{i:02d}" for i in range(19))]
        await fleet.wait_converged(names, within_s=30)
        return {
            path: await asyncio.to_thread(_wrk, sidecar.url + path, seconds)
            for path in ("/v1/status", "/status")
        }
    finally:
        await store.delete(keys.prefix, prefix=True)
        await store.close()
        await fleet.close()


def _etcd_requests(etcd: LocalEtcdCluster) -> float:
    total = 0.0
    for member in etcd.members:
        with urllib.request.urlopen(member.client_url + "/metrics", timeout=2) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("grpc_server_handled_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def footprint(etcd: LocalEtcdCluster, workdir: Path, idle_s: float = 60) -> dict[str, Any]:
    fleet = Fleet(etcd, workdir, lease_ttl=10)
    sidecar = fleet.add("hetzner-cpu1")
    try:
        await fleet.wait_converged(["hetzner-cpu1"], within_s=30)
        assert sidecar.process is not None
        process = psutil.Process(sidecar.process.pid)
        cpu_before = sum(process.cpu_times()[:2])
        requests_before = _etcd_requests(etcd)
        started = time.monotonic()
        await asyncio.sleep(idle_s)
        elapsed = time.monotonic() - started
        result: dict[str, Any] = {
            "idle_seconds": round(elapsed, 1),
            "rss_mb": round(process.memory_info().rss / 2**20, 1),
            "cpu_seconds": round(sum(process.cpu_times()[:2]) - cpu_before, 2),
            "etcd_requests_per_s": round((_etcd_requests(etcd) - requests_before) / elapsed, 2),
        }
        result["status_command_s"] = await asyncio.to_thread(_status_wall_time, sidecar.url)
        return result
    finally:
        await fleet.close()


def _status_wall_time(url: str, runs: int = 20) -> dict[str, float]:
    """`ringside status` from process start to exit, as an operator types it."""
    command = [str(Path(sys.executable).with_name("ringside")), "status", "--sidecar", url]
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.monotonic() - started)
    return {"median": round(statistics.median(times), 3), "max": round(max(times), 3)}
