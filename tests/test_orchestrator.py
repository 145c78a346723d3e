"""The orchestrator's health check, published in the member record and read by other nodes.

A real HTTP server stands in for the orchestrator's health route and the sidecars run on the
real etcd: what one node's check sees must reach another node's view through etcd.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.agent import Agent
from sidecar.api.bodies import member_document
from sidecar.keys import Keys
from sidecar.orchestrator import OrchestratorWatch
from sidecar.records import OrchestratorHealth
from sidecar.store.etcd import EtcdStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.agents import make_agent, running, running_agent, until
from tests.cli_support import ringside, table
from tests.fleet import Fleet
from tests.reads import get_one
from tests.waiting import wait_for


@dataclass
class FakeOrchestrator:
    """Answers GET /health with `status`, and counts the checks."""

    status: int = 200
    checks: int = 0

    async def health(self, _request: web.Request) -> web.Response:
        self.checks += 1
        return web.json_response({"status": "ok"}, status=self.status)


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[FakeOrchestrator, str]]:
    fake = FakeOrchestrator()
    app = web.Application()
    app.router.add_get("/health", fake.health)
    async with TestServer(app) as server:
        yield fake, str(server.make_url("/health"))


@pytest.fixture
async def store(etcd_cluster: LocalEtcdCluster) -> AsyncIterator[EtcdStore]:
    client = etcd_cluster.client()
    yield client
    await client.close()


def seen(observer: Agent, node_id: str) -> OrchestratorHealth | None:
    member = observer.view.members.get(node_id)
    return member.record.orchestrator if member and member.record else None


async def test_health_reaches_other_nodes_and_only_changes_are_written(
    orchestrator: tuple[FakeOrchestrator, str], store: EtcdStore
) -> None:
    fake, url = orchestrator
    cluster = f"orch-{uuid.uuid4().hex[:8]}"
    checks = {"health_url": url, "check_interval": 1, "failures_before_unhealthy": 2}
    checked = make_agent(store, "hetzner-cpu1", cluster, orchestrator=checks)
    async with running(checked), running_agent(store, "hetzner-cpu2", cluster) as observer:
        await until(lambda: len(observer.view.members) == 2, within_s=10)
        await until(lambda: (seen(observer, "hetzner-cpu1") or _down()).healthy, within_s=10)
        first = seen(observer, "hetzner-cpu1")
        assert first is not None
        assert first.detail == "HTTP 200"
        document = member_document(observer.view.members["hetzner-cpu1"], None)
        assert document["orchestrator"] == first.model_dump()
        assert member_document(observer.view.members["hetzner-cpu2"], None)["orchestrator"] is None

        # A steady state changes nothing: more checks, the same record (its `since` too). The
        # key itself is rewritten with every keepalive, unchanged, as proof of life (0022).
        key = Keys(cluster).member("hetzner-cpu1")
        value = await _value(store, key)
        later = fake.checks + 3
        await until(lambda: fake.checks >= later, within_s=10)
        assert await _value(store, key) == value

        fake.status = 503
        failing_from = fake.checks
        await until(lambda: not (seen(observer, "hetzner-cpu1") or _up()).healthy, within_s=10)
        assert fake.checks - failing_from >= 2  # one failed check is not enough to call it down
        down = seen(observer, "hetzner-cpu1")
        assert down is not None
        assert down.detail == "HTTP 503"
        value = await _value(store, key)  # nor does staying down
        later = fake.checks + 3
        await until(lambda: fake.checks >= later, within_s=10)
        assert await _value(store, key) == value

        fake.status = 200
        await until(lambda: (seen(observer, "hetzner-cpu1") or _down()).healthy, within_s=10)
        joins = [e for e in observer.events if e.kind == "member_joined"]
        assert len(joins) == 2  # record updates are not joins


async def test_an_orchestrator_that_does_not_answer_is_published_down(
    store: EtcdStore,
) -> None:
    cluster = f"orch-{uuid.uuid4().hex[:8]}"
    checks = {"health_url": "http://127.0.0.1:9/health", "check_interval": 1}  # discard port
    async with running_agent(store, "hetzner-cpu1", cluster, orchestrator=checks) as agent:
        await until(lambda: seen(agent, "hetzner-cpu1") is not None, within_s=10)
        health = seen(agent, "hetzner-cpu1")
        assert health is not None
        assert not health.healthy
        assert "refused" in health.detail


def _down() -> OrchestratorHealth:
    return OrchestratorHealth(healthy=False, detail="not seen yet", since="")


def _up() -> OrchestratorHealth:
    return OrchestratorHealth(healthy=True, detail="not seen yet", since="")


async def _value(store: EtcdStore, key: str) -> bytes:
    kv = await get_one(store, key)
    assert kv is not None
    return kv.value


async def test_status_wide_shows_each_nodes_orchestrator(
    fleet: Fleet, orchestrator: tuple[FakeOrchestrator, str]
) -> None:
    """Set by environment in a real `ringside run`, read back through `ringside status`."""
    _, url = orchestrator
    fleet.add("hetzner-cpu1", env={"RINGSIDE_ORCHESTRATOR_HEALTH_URL": url})
    fleet.add("hetzner-cpu2", env={"RINGSIDE_ORCHESTRATOR_HEALTH_URL": "http://127.0.0.1:9/"})
    fleet.add("lambda-gh200-3", eligible=False)
    await fleet.wait_converged(["hetzner-cpu1", "hetzner-cpu2", "lambda-gh200-3"], within_s=20)
    observer = fleet.sidecars["lambda-gh200-3"]
    expected = {"hetzner-cpu1": "up", "hetzner-cpu2": "DOWN", "lambda-gh200-3": "-"}
    result = None

    async def shown() -> bool:
        nonlocal result
        result = await ringside("status", "--sidecar", observer.url, "-o", "wide")
        assert result.returncode == 0, result
        return {node: row[5] for node, row in table(result.stdout).items()} == expected

    await wait_for(shown, 15, what=f"status -o wide never showed {expected}")
    assert result is not None
    assert result.stdout.splitlines()[0].endswith("; orchestrator DOWN on hetzner-cpu2")


async def test_a_failing_publish_is_logged_and_retried(
    orchestrator: tuple[FakeOrchestrator, str], caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error must not end the check (the published state would freeze)."""
    _, url = orchestrator
    published: list[OrchestratorHealth] = []
    calls = 0

    async def publish(health: OrchestratorHealth) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        published.append(health)
        return True

    watch = OrchestratorWatch(url, interval_s=1, failures_before_unhealthy=2, publish=publish)
    task = asyncio.create_task(watch.run())
    try:
        await until(lambda: bool(published), within_s=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "failed unexpectedly" in caplog.text
    assert calls == 2
    assert [h.healthy for h in published] == [True]
