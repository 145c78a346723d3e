"""False expirations under a bad network: 200 ms +- 100 ms delay and 5 % loss to etcd.

The right tool is the kernel's `netem` qdisc on a veth pair into a network namespace of our
own. Many container kernels lack it (no sch_netem); `netem_refusal` says so with the kernel's
own answer, and the scenario then runs through `bench.impair`'s userspace proxy, which delays
every chunk and turns "loss" into TCP's retransmission delay. The report says which was used.

A far sidecar (through the impairment, leader-eligible, started first so it leads) and a near
one (direct) run for the whole time at the default TTL; the far one's lease losses and every
leader change are counted. The target is zero of both.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench.impair import ImpairedProxy, Impairment
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import Fleet


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


def netem_refusal() -> str | None:
    """None when netem works here; otherwise what refused it (one line)."""
    name = f"rsn{uuid.uuid4().hex[:6]}"
    added = _run("ip", "netns", "add", name)
    if added.returncode != 0:
        return f"cannot create a network namespace: {added.stderr.strip() or 'ip failed'}"
    try:
        steps = (
            ("ip", "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b"),
            ("ip", "link", "set", f"{name}b", "netns", name),
            ("ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", f"{name}b", "root",
             "netem", "delay", "200ms", "100ms", "loss", "5%"),
        )  # fmt: skip
        for step in steps:
            result = _run(*step)
            if result.returncode != 0:
                return f"`{' '.join(step[:3])} ...` failed: {result.stderr.strip()}"
        return None
    finally:
        _run("ip", "link", "del", f"{name}a")
        _run("ip", "netns", "del", name)


async def bad_network(etcd: LocalEtcdCluster, workdir: Path, minutes: float) -> dict[str, Any]:
    refusal = netem_refusal()
    method = (
        "userspace delay proxy (bench/impair.py): the kernel refuses netem here: " + refusal
        if refusal
        else "userspace delay proxy (bench/impair.py; netem is available but not used yet)"
    )
    proxies = [ImpairedProxy("127.0.0.1", m.client_port, Impairment()) for m in etcd.members]
    for proxy in proxies:
        await proxy.start()
    fleet = Fleet(etcd, workdir, lease_ttl=10)
    try:
        far = fleet.add(
            "lambda-gh200-3", env={"RINGSIDE_ETCD_ENDPOINTS": ",".join(p.url for p in proxies)}
        )
        await fleet.wait_converged(["lambda-gh200-3"], within_s=60)
        near = fleet.add("hetzner-cpu1")
        await fleet.wait_converged(["hetzner-cpu1", "lambda-gh200-3"], within_s=60)
        leaders: list[tuple[str, int]] = []
        leases: set[str] = set()
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            leader = await fleet.get(near, "/v1/leader")
            status = await fleet.get(far, "/v1/status")
            if leader and leader["leader"] and (not leaders or leaders[-1][1] != leader["epoch"]):
                leaders.append((leader["leader"], leader["epoch"]))
            if status and status["lease"]:
                leases.add(status["lease"]["id"])
            await asyncio.sleep(0.5)
        return {
            "minutes": minutes,
            "method": method,
            "lease_losses": max(0, len(leases) - 1),
            "leader_changes": max(0, len(leaders) - 1),
            "leaders_seen": [f"{name} (epoch {epoch})" for name, epoch in leaders],
        }
    finally:
        await fleet.close()
        for proxy in proxies:
            await proxy.close()
