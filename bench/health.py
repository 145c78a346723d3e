"""Leadership that serves the orchestrator: orchestrator failure -> new leader at the
defaults (decision 0015), and switchover -> every sidecar names the target (decision 0016).

Three eligible sidecars, each checking its own stand-in orchestrator (an HTTP route of this
process) every 5 s, called down after 3 failed checks: the defaults. Each trial makes the
leader's orchestrator answer 503 and times how long until every sidecar names another
leader with a higher epoch. The first failed probe comes up to one interval after the
failure, so the design expects 10-15 s plus the handover (milliseconds); the issue's target
is 16 s, against Patroni's 30 s loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.sidecars import EligibleNodes, leader_of, until_all
from bench.stats import Figure
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import Fleet, InvariantChecker
from tests.reads import candidates_in_order
from tests.served import served

TARGET_S = 16.0


@asynccontextmanager
async def orchestrators(status: dict[str, int]) -> AsyncIterator[str]:
    """Serves GET /<node>/health with `status[node]` (200 unless set); yields the base URL."""

    async def health(request: web.Request) -> web.Response:
        code = status.get(request.match_info["node"], 200)
        return web.json_response({"ok": code == 200}, status=code)

    app = web.Application()
    app.router.add_get("/{node}/health", health)
    async with served(app) as url:
        yield url


async def orchestrator_failover(etcd: LocalEtcdCluster, workdir: Path, trials: int) -> Figure:
    """The leader's orchestrator fails; time until every sidecar names a new leader."""
    figure = Figure(
        "orchestrator down -> new leader (checks every 5 s, down after 3)", "s",
        against="target 16 s", reference=TARGET_S,
    )  # fmt: skip
    status: dict[str, int] = {}
    async with orchestrators(status) as url:
        fleet = Fleet(etcd, workdir, lease_ttl=10)
        try:
            for node in EligibleNodes:
                # Defaults but one: a node that handed over stands again at once when healthy
                # (rejoin_after 0), so the next trial need not wait 30 s for a third candidate.
                health = {"health_url": f"{url}/{node}/health", "rejoin_after": 0}
                fleet.add(node, settings={"orchestrator": health})
            await fleet.wait_converged(EligibleNodes, within_s=60)
            async with InvariantChecker(fleet):
                for _ in range(trials):
                    await _trial(fleet, status, figure)
        finally:
            await fleet.close()
    return figure


async def _trial(fleet: Fleet, status: dict[str, int], figure: Figure) -> None:
    leader, epoch = await leader_of(fleet, within_s=30)
    old = leader.node_id

    def moved_on(answers: list[dict[str, Any]]) -> bool:
        leaders = {(a["leader"], a["epoch"]) for a in answers}
        new, new_epoch = leaders.pop() if len(leaders) == 1 else (None, None)
        return new not in (None, old) and new_epoch is not None and new_epoch > epoch

    status[old] = 503
    started = time.monotonic()
    done = await until_all(fleet, fleet.running(), "/v1/leader", moved_on, 40)
    figure.samples.append(done - started)
    status[old] = 200
    await fleet.wait_converged(EligibleNodes, within_s=30)


SWITCHOVER_TARGET_S = 0.050  # `etcdctl move-leader`-class, on loopback


async def switchover(etcd: LocalEtcdCluster, workdir: Path, trials: int) -> Figure:
    """`POST /v1/leader/switchover?to=<youngest candidate>` on a third node; time until
    every sidecar names the target at a higher epoch (decision 0016).

    The youngest candidate is the slow path: the candidate between it and the leader queues
    again first, then the leader resigns. `leader.switchover_hold` is 0 here, so back-to-back
    trials measure the mechanism, not the hold (5 s by default, a policy, not a latency).
    """
    figure = Figure(
        "switchover --to the youngest candidate -> every sidecar names it", "s",
        against="target 50 ms", reference=SWITCHOVER_TARGET_S,
    )  # fmt: skip
    fleet = Fleet(etcd, workdir, lease_ttl=10)
    try:
        for node in EligibleNodes:
            fleet.add(node, settings={"leader": {"switchover_hold": 0}})
        await fleet.wait_converged(EligibleNodes, within_s=60)
        async with InvariantChecker(fleet):
            for _ in range(trials):
                figure.samples.append(await _switchover_trial(fleet))
    finally:
        await fleet.close()
    return figure


async def _switchover_trial(fleet: Fleet) -> float:
    queue = await _queue(fleet)
    leader, youngest = queue[0], queue[-1]
    via = next(s for s in fleet.running() if s.node_id not in (leader, youngest))
    _, epoch = await leader_of(fleet, within_s=30)

    def moved(answers: list[dict[str, Any]]) -> bool:
        return all(a["leader"] == youngest and (a["epoch"] or 0) > epoch for a in answers)

    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(
            f"{via.url}/v1/leader/switchover", params={"to": youngest}, headers=via.auth_header()
        ) as answer:
            if answer.status != 202:
                raise RuntimeError(f"switchover refused: {answer.status} {await answer.text()}")
    done = await until_all(fleet, fleet.running(), "/v1/leader", moved, 10)
    await until_standing(fleet)
    return done - started


async def _queue(fleet: Fleet) -> list[str]:
    store = fleet.etcd.client()
    try:
        return await candidates_in_order(store, fleet.cluster)
    finally:
        await store.close()


async def until_standing(fleet: Fleet) -> None:
    """Wait until every eligible node campaigns again (the old leader re-queues)."""
    deadline = time.monotonic() + 10
    while len(await _queue(fleet)) < len(EligibleNodes):
        if time.monotonic() > deadline:
            raise RuntimeError("not every node campaigns again after a switchover")
        await asyncio.sleep(0.02)
