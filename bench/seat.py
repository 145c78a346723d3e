"""Keeping the leader's seat, and keeping its word (issue 21).

- **Crash and restart.** kill -9 of the leader's sidecar, restarted at once by its supervisor;
  timed from the kill until another sidecar claims the leadership. Before the promise file
  (decision 0025) the restart revoked its predecessor's lease at once and a successor led
  inside the promise; now nobody may lead before the last promise runs out. Each trial also
  counts a successor that led inside it (target 0).
- **One etcd member's fault.** Five sidecars at TTL 5 s; one etcd member killed or paused
  (SIGSTOP) for `HOLD_S`, the Raft leader or another, then healed; counted: how often the
  ringside leadership moved (target 0: a majority is up, so nothing should move).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from bench.sidecars import _fleet, leader_of
from bench.stats import Figure
from sidecar.testing.localcluster import EtcdMember, LocalEtcdCluster
from tests.fleet import Fleet

TTL = 5
HOLD_S = 3.0  # how long a member stays killed or paused
SETTLE_S = 2 * TTL  # after healing: time for a late leader change to show


async def crash_restart(etcd: LocalEtcdCluster, workdir: Path, trials: int) -> list[Figure]:
    took = Figure(
        f"crash and immediate restart of the leader's sidecar, TTL {TTL} s",
        "s",
        against=f"TTL {TTL} s",
        reference=TTL,
    )
    inside = Figure("successors that led inside the dead process's promise", "trials")
    fleet = await _fleet(etcd, workdir, TTL)
    try:
        for _ in range(trials):
            leader, _ = await leader_of(fleet, within_s=2 * TTL + 10)
            sent = time.monotonic()
            answer = await fleet.get(leader, "/v1/leader")
            promised_until = sent + float((answer or {}).get("valid_for_s") or 0.0)
            killed = time.monotonic()
            leader.signal(signal.SIGKILL)
            leader.wait_exit(5)
            leader.start()
            successor_at = await _someone_else_leads(fleet, leader.node_id, 2 * TTL + 10)
            took.samples.append(successor_at - killed)
            inside.samples.append(1.0 if successor_at < promised_until else 0.0)
            names = [s.node_id for s in fleet.sidecars.values()]
            await fleet.wait_converged(names, within_s=2 * TTL + 10)
    finally:
        await fleet.close()
    return [took, inside]


async def _someone_else_leads(fleet: Fleet, node_id: str, within_s: float) -> float:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        for sidecar in fleet.running():
            if sidecar.node_id == node_id:
                continue
            answer = await fleet.get(sidecar, "/v1/leader")
            if answer is not None and answer.get("is_self"):
                return time.monotonic()
        await asyncio.sleep(0.02)
    return deadline


async def member_faults(etcd: LocalEtcdCluster, workdir: Path, trials: int) -> list[Figure]:
    """Leader changes per single etcd member fault, for each kind of fault."""
    figures = []
    fleet = await _fleet(etcd, workdir, TTL, count=5)
    try:
        for how in ("kill", "pause"):
            for which in ("raft-leader", "other"):
                done = {"kill": "killed", "pause": "paused"}[how]
                figure = Figure(
                    f"leader changes, etcd {which} member {done} for {HOLD_S:g} s, TTL {TTL} s",
                    "changes",
                    note="target 0",
                )
                for _ in range(trials):
                    figure.samples.append(await _one_fault(etcd, fleet, how, which))
                figures.append(figure)
    finally:
        await fleet.close()
    return figures


async def _one_fault(etcd: LocalEtcdCluster, fleet: Fleet, how: str, which: str) -> float:
    names = [s.node_id for s in fleet.sidecars.values()]
    await fleet.wait_converged(names, within_s=2 * TTL + 10)
    _, epoch = await leader_of(fleet, within_s=2 * TTL + 10)
    raft_leader = await asyncio.to_thread(etcd.leader)
    member: EtcdMember = raft_leader
    if which == "other":
        member = next(m for m in etcd.members if m is not raft_leader)
    member.kill() if how == "kill" else member.pause()
    epochs = {epoch}
    until = time.monotonic() + HOLD_S
    while time.monotonic() < until:
        epochs |= await _epochs(fleet)
        await asyncio.sleep(0.05)
    await asyncio.to_thread(etcd.heal)
    until = time.monotonic() + SETTLE_S
    while time.monotonic() < until:
        epochs |= await _epochs(fleet)
        await asyncio.sleep(0.1)
    return float(len(epochs) - 1)


async def _epochs(fleet: Fleet) -> set[int]:
    """The epochs claimed right now (by the sidecars that claim to lead)."""
    found = set()
    for sidecar in fleet.running():
        answer = await fleet.get(sidecar, "/v1/leader")
        if answer is not None and answer.get("is_self") and answer.get("epoch"):
            found.add(int(answer["epoch"]))
    return found
