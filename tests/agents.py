"""In-process agents for fast tests: build one, run it, wait on it (deadlines, never sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sidecar.agent import Agent
from sidecar.daemon import build_agent
from sidecar.records import MemberRecord
from sidecar.settings import RingsideConfig
from sidecar.store.base import Store
from tests.waiting import wait_for

TTL = 2  # etcd's minimum: keepalives every ~0.67 s, validity 1.5 s with the 0.5 s margin


def make_agent(
    store: Store,
    node_id: str,
    cluster: str,
    *,
    eligible: bool = True,
    token: str | None = None,
    orchestrator: dict[str, object] | None = None,
    lease_ttl: int = TTL,
    **leader: object,
) -> Agent:
    """An agent with a short lease; `leader` overrides `leader.*` settings (hooks, margin)."""
    config = RingsideConfig.model_validate(
        {
            "cluster": cluster,
            "lease_ttl": lease_ttl,
            "leader": {"eligible": eligible, "validity_margin": 0.5, **leader},
            "http": {"token": token},
            "orchestrator": orchestrator or {},
        }
    )
    record = MemberRecord(
        node_id=node_id,
        addresses=("203.0.113.21",),
        labels={"gpu": "none"},
        eligible=eligible,
        version="test",
        pid=1,
        hostname="test",
        started_at="2026-11-27T21:00:00+00:00",
    )
    return build_agent(config, node_id, store, record, quorum_interval_s=0.5)


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    """Run `agent` for the block, then stop it the way SIGTERM does."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def running_agent(
    store: Store, node_id: str, cluster: str, **options: object
) -> AsyncIterator[Agent]:
    async with running(make_agent(store, node_id, cluster, **options)) as agent:  # type: ignore[arg-type]
        yield agent


async def until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    """`wait_for` for a plain condition on in-process state, polled a little faster."""
    await wait_for(predicate, within_s, interval_s=0.02)
