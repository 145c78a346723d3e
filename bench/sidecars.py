"""Scenarios on real `ringside run` processes: crash detection, failover, handover, joins.

Each trial changes one thing and times how long until *every other* sidecar's own API says
the cluster moved on, polling all of them concurrently every few milliseconds. The fleet and
its invariant checker are the ones the scenario tests use (`tests/fleet.py`).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import Figure
from sidecar.keys import Keys
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import EventType
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import Fleet, InvariantChecker, Sidecar

POLL_S = 0.005
EligibleNodes = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")


async def until_all(
    fleet: Fleet,
    sidecars: list[Sidecar],
    path: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    within_s: float,
) -> float:
    """The monotonic time at which every sidecar's answer on `path` satisfies `predicate`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(fleet.get(s, path) for s in sidecars))
        if all(answers) and predicate([a for a in answers if a]):
            return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"condition on {path} not met within {within_s} s")


def _members(answers: list[dict[str, Any]]) -> list[set[str]]:
    return [{m["node_id"] for m in a["members"]} for a in answers]


def gone(node_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    """Every `/v1/members` answer lacks `node_id`."""
    return lambda answers: all(node_id not in m for m in _members(answers))


def present(node_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    """Every `/v1/members` answer lists `node_id`."""
    return lambda answers: all(node_id in m for m in _members(answers))


async def leader_of(fleet: Fleet, within_s: float = 0.0) -> tuple[Sidecar, int]:
    """The sidecar that claims leadership, and its epoch; asked again for up to `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        for sidecar in fleet.running():
            answer = await fleet.get(sidecar, "/v1/leader")
            if answer and answer["is_self"]:
                return sidecar, int(answer["epoch"])
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no sidecar claimed leadership within {within_s:g} s")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class FleetAccess:
    """How a fleet reaches an etcd that is not plain (TLS, auth): the ringside cluster name
    its etcd users were made for, and each node's settings (`etcd.username`, ...)."""

    cluster: str
    settings: Callable[[str], dict[str, Any]]


async def _fleet(
    etcd: LocalEtcdCluster,
    workdir: Path,
    ttl: int,
    count: int = 3,
    access: FleetAccess | None = None,
) -> Fleet:
    fleet = Fleet(etcd, workdir, lease_ttl=ttl)
    if access is not None:
        fleet.cluster = access.cluster
    names = [*EligibleNodes, "lambda-gh200-3", "vast-29118471"][:count]
    for name in names:
        settings = access.settings(name) if access is not None else None
        fleet.add(name, eligible=name in EligibleNodes, settings=settings)
    await fleet.wait_converged(names, within_s=30)
    return fleet


async def crash_detection(etcd: LocalEtcdCluster, workdir: Path, ttl: int, trials: int) -> Figure:
    """kill -9 a follower; time until every other view has dropped it."""
    figure = Figure(f"crash detection, TTL {ttl} s", "s", against=f"TTL {ttl} s", reference=ttl)
    fleet = await _fleet(etcd, workdir, ttl)
    try:
        async with InvariantChecker(fleet):
            for _ in range(trials):
                leader, _ = await leader_of(fleet)
                victim = next(s for s in fleet.running() if s is not leader)
                others = [s for s in fleet.running() if s is not victim]
                victim.signal(signal.SIGKILL)
                killed = time.monotonic()
                done = await until_all(fleet, others, "/v1/members", gone(victim.node_id), ttl + 10)
                figure.samples.append(done - killed)
                victim.start()
                await fleet.wait_converged(
                    [s.node_id for s in fleet.sidecars.values()], within_s=2 * ttl + 10
                )
    finally:
        await fleet.close()
    return figure


async def leader_change(
    etcd: LocalEtcdCluster,
    workdir: Path,
    ttl: int,
    trials: int,
    how: str,
    *,
    access: FleetAccess | None = None,
) -> Figure:
    """Replace the leader (`how`: kill, sigterm or resign); time until every remaining
    sidecar reports the same new leader with a higher epoch. `access`: how the sidecars
    reach `etcd` when it wants TLS or credentials."""
    titles = {
        "kill": "crash failover (kill -9 the leader)",
        "kill-with-etcd-leader": "crash failover, etcd Raft leader killed at the same moment",
        "sigterm": "graceful handover (SIGTERM the leader)",
        "resign": "graceful handover (POST /v1/leader/resign)",
    }
    figure = Figure(f"{titles[how]}, TTL {ttl} s", "s", against=f"TTL {ttl} s", reference=ttl)
    if how == "kill-with-etcd-leader":
        # etcd's new leader renews every lease to its full TTL: the design's worst case.
        figure.against, figure.reference = "design worst case 2 x TTL + 2.5 s", 2 * ttl + 2.5
    fleet = await _fleet(etcd, workdir, ttl, access=access)
    try:
        async with InvariantChecker(fleet):
            for _ in range(trials):
                leader, epoch = await leader_of(fleet)
                others = [s for s in fleet.running() if s is not leader]
                raft_leader = None
                if how == "kill-with-etcd-leader":
                    raft_leader = await asyncio.to_thread(etcd.leader)
                started = time.monotonic()
                if how.startswith("kill"):
                    leader.signal(signal.SIGKILL)
                    if raft_leader is not None:
                        raft_leader.kill()
                elif how == "sigterm":
                    leader.signal(signal.SIGTERM)
                else:
                    await _resign(leader)
                watchers = others if how != "resign" else fleet.running()

                def moved_on(
                    answers: list[dict[str, Any]], old: str = leader.node_id, epoch: int = epoch
                ) -> bool:
                    leaders = {(a["leader"], a["epoch"]) for a in answers}
                    if len(leaders) != 1:
                        return False
                    new, new_epoch = leaders.pop()
                    return new not in (None, old) and new_epoch is not None and new_epoch > epoch

                done = await until_all(fleet, watchers, "/v1/leader", moved_on, 2 * ttl + 10)
                figure.samples.append(done - started)
                if raft_leader is not None:
                    await asyncio.to_thread(etcd.heal)
                if how != "resign":
                    leader.wait_exit(10)
                    leader.start()
                names = [s.node_id for s in fleet.sidecars.values()]
                await fleet.wait_converged(names, within_s=2 * ttl + 10)
    finally:
        await fleet.close()
    return figure


async def _resign(leader: Sidecar) -> None:
    import urllib.request  # noqa: PLC0415

    request = urllib.request.Request(
        leader.url + "/v1/leader/resign", method="POST", data=b"", headers=leader.auth_header()
    )
    await asyncio.to_thread(urllib.request.urlopen, request, timeout=2)


async def convergence(etcd: LocalEtcdCluster, workdir: Path, trials: int) -> tuple[Figure, Figure]:
    """N = 5 sidecars: one leaves (SIGTERM) and joins again; time until all views agree.

    A join is timed from the moment a watcher of our own (on another etcd member) sees the new
    member key, so interpreter start-up is not counted; a leave from the SIGTERM."""
    leave = Figure("convergence after a leave (N = 5, from SIGTERM)", "s")
    join = Figure("convergence after a join (N = 5, from registration)", "s")
    fleet = await _fleet(etcd, workdir, ttl=10, count=5)
    registered: dict[str, float] = {}
    store = EtcdStore.connect([etcd.members[2].client_url])
    watcher = asyncio.create_task(_watch_puts(store, Keys(fleet.cluster).members, registered))
    try:
        names = [s.node_id for s in fleet.sidecars.values()]
        for _ in range(trials):
            mover = fleet.sidecars["vast-29118471"]
            stayers = [s for s in fleet.running() if s is not mover]
            mover.signal(signal.SIGTERM)
            started = time.monotonic()
            done = await until_all(fleet, stayers, "/v1/members", gone(mover.node_id), 10)
            leave.samples.append(done - started)
            mover.wait_exit(10)
            registered.pop(mover.node_id, None)
            mover.start()
            done = await until_all(fleet, stayers, "/v1/members", present(mover.node_id), 30)
            join.samples.append(done - registered[mover.node_id])
            await fleet.wait_converged(names, within_s=20)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await store.close()
        await fleet.close()
    return leave, join


async def _watch_puts(store: EtcdStore, prefix: str, seen: dict[str, float]) -> None:
    async with store.watch(prefix, prefix=True) as batches:
        async for batch in batches:
            for event in batch.events:
                if event.type is EventType.PUT:
                    seen.setdefault(event.kv.key.removeprefix(prefix), time.monotonic())
