"""Metrics of real in-process agents on the in-memory store, read back through the
Prometheus text parser exactly as a scraper would see them."""

from __future__ import annotations

from datetime import datetime

from prometheus_client.parser import text_string_to_metric_families

from sidecar import __version__
from sidecar.compat import UTC
from sidecar.metrics import Metrics
from sidecar.store.memory import ENDPOINT, MemoryStore
from sidecar.store.model import EndpointState, StoreStats
from tests.agents import (
    TTL,
    make_agent,
    running,
    until,
)


def scrape(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of one scrape, by sample name and labels."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    """One sample's value, None when the series is absent."""
    return scrape(metrics).get((name, frozenset(labels.items())))


async def test_before_running_nothing_is_claimed(store: MemoryStore, cluster: str) -> None:
    metrics = Metrics(make_agent(store, "n1", cluster))
    assert value(metrics, "ringside_is_leader") == 0
    assert value(metrics, "ringside_epoch") is None  # no leader: the series is absent
    assert value(metrics, "ringside_lease_remaining_seconds") is None
    assert value(metrics, "ringside_view_synced") == 0
    assert value(metrics, "ringside_members_alive") == 0
    assert value(metrics, "ringside_quorum_ok") == 0
    assert value(metrics, "ringside_info", node_id="n1", cluster=cluster, version=__version__) == 1


async def test_leader_gauges_follow_the_agent(store: MemoryStore, cluster: str) -> None:
    agent = make_agent(store, "n1", cluster)
    metrics = Metrics(agent)
    async with running(agent):
        await until(lambda: agent.leadership().is_leader and agent.health.quorum_ok)
        assert value(metrics, "ringside_is_leader") == 1
        assert agent.leadership().epoch is not None
        assert value(metrics, "ringside_epoch") == agent.leadership().epoch
        assert value(metrics, "ringside_members_alive") == 1
        assert value(metrics, "ringside_view_synced") == 1
        assert value(metrics, "ringside_quorum_ok") == 1
        assert value(metrics, "ringside_voters_healthy") == 1
        assert value(metrics, "ringside_voters") == 1
        assert value(metrics, "ringside_etcd_endpoint_up", endpoint=ENDPOINT) == 1
        remaining = value(metrics, "ringside_lease_remaining_seconds")
        assert remaining is not None
        assert 0 < remaining <= TTL


async def test_endpoint_up_is_zero_when_down_or_unknown(cluster: str) -> None:
    class ThreeEndpoints(MemoryStore):
        def endpoint_states(self) -> tuple[EndpointState, ...]:
            return (
                EndpointState("http://a:2379", reachable=True),
                EndpointState("http://b:2379", reachable=False),
                EndpointState("http://c:2379", reachable=None),
            )

    store = ThreeEndpoints()
    try:
        metrics = Metrics(make_agent(store, "n1", cluster))
        assert value(metrics, "ringside_etcd_endpoint_up", endpoint="http://a:2379") == 1
        assert value(metrics, "ringside_etcd_endpoint_up", endpoint="http://b:2379") == 0
        assert value(metrics, "ringside_etcd_endpoint_up", endpoint="http://c:2379") == 0
    finally:
        await store.close()


async def test_watch_reconnects_read_from_the_store(cluster: str) -> None:
    class Reconnecting(MemoryStore):
        watch_reconnects = 0

        def stats(self) -> StoreStats:
            return StoreStats(self.endpoint_states(), self.watch_reconnects)

    plain, reconnecting = MemoryStore(), Reconnecting()
    try:
        assert (
            value(Metrics(make_agent(plain, "n1", cluster)), "ringside_watch_reconnects_total") == 0
        )
        metrics = Metrics(make_agent(reconnecting, "n2", cluster))
        reconnecting.watch_reconnects = 3
        assert value(metrics, "ringside_watch_reconnects_total") == 3
    finally:
        await plain.close()
        await reconnecting.close()


async def test_keepalive_latency_is_observed_and_chained(store: MemoryStore, cluster: str) -> None:
    agent = make_agent(store, "n1", cluster)
    seen: list[float] = []
    agent.listen_keepalives(seen.append)
    metrics = Metrics(agent)
    count = "ringside_keepalive_latency_seconds_count"
    async with running(agent):
        await until(lambda: (value(metrics, count) or 0) >= 2)
        total = value(metrics, count)
        assert total is not None
        assert len(seen) >= total  # the callback that was there before still runs
        assert value(metrics, "ringside_keepalive_latency_seconds_bucket", le="5.0") == total


async def test_keepalives_of_an_open_session_are_observed(store: MemoryStore, cluster: str) -> None:
    agent = make_agent(store, "n1", cluster)
    async with running(agent):
        await until(lambda: agent.session is not None)
        session = agent.session
        metrics = Metrics(agent)  # after the session got its callback
        await until(lambda: (value(metrics, "ringside_keepalive_latency_seconds_count") or 0) >= 1)
        assert agent.session is session


async def test_leader_and_member_changes_are_counted(store: MemoryStore, cluster: str) -> None:
    first = make_agent(store, "n1", cluster)
    metrics = Metrics(first)

    def counted(kind: str) -> float | None:
        return value(metrics, "ringside_member_changes_total", kind=kind)

    def logged(kind: str) -> int:
        return sum(1 for event in first.events if event.kind == kind)

    async with running(first):
        await until(lambda: first.leadership().is_leader)
        assert value(metrics, "ringside_leader_changes_total") == logged("leader_changed") >= 1
        assert counted("joined") == 1
        assert counted("left") == 0
        async with running(make_agent(store, "n2", cluster)):
            await until(lambda: counted("joined") == 2)
        await until(lambda: counted("left") == 1)
        assert logged("member_left") == 1  # the log itself still gets every event
        assert value(metrics, "ringside_members_alive") == 1


async def test_events_before_construction_are_counted_once(
    store: MemoryStore, cluster: str
) -> None:
    agent = make_agent(store, "n1", cluster)
    async with running(agent):
        await until(lambda: agent.leadership().is_leader)
        metrics = Metrics(agent)
        assert value(metrics, "ringside_member_changes_total", kind="joined") == 1
        assert value(metrics, "ringside_leader_changes_total") == sum(
            1 for event in agent.events if event.kind == "leader_changed"
        )


async def test_agents_in_one_process_have_separate_registries(
    store: MemoryStore, cluster: str
) -> None:
    one, two = Metrics(make_agent(store, "n1", cluster)), Metrics(make_agent(store, "n2", cluster))
    assert value(one, "ringside_info", node_id="n1", cluster=cluster, version=__version__) == 1
    assert value(one, "ringside_info", node_id="n2", cluster=cluster, version=__version__) is None
    assert value(two, "ringside_info", node_id="n2", cluster=cluster, version=__version__) == 1


async def test_orchestrator_gauges(store: MemoryStore, cluster: str) -> None:
    """This node's check, and how many live members report a failing orchestrator."""
    unchecked = make_agent(store, "n1", cluster)
    assert value(Metrics(unchecked), "ringside_orchestrator_healthy") is None  # not configured
    checks = {"health_url": "http://127.0.0.1:9/health", "check_interval": 1}  # nothing there
    agent = make_agent(store, "n2", cluster, orchestrator=checks)
    metrics = Metrics(agent)
    async with running(agent):
        await until(lambda: value(metrics, "ringside_members_orchestrator_down") == 1)
        assert value(metrics, "ringside_orchestrator_healthy") == 0


async def test_certificate_expiry_is_exported(store: MemoryStore, cluster: str) -> None:
    when = datetime(2029, 3, 5, 14, 9, 44, tzinfo=UTC)
    metrics = Metrics(make_agent(store, "n1", cluster), certificates={"client": when})
    name = "ringside_tls_expiry_timestamp_seconds"
    assert value(metrics, name, certificate="client") == when.timestamp()
    assert value(Metrics(make_agent(store, "n2", cluster)), name, certificate="client") is None


async def test_member_up_lists_live_members_and_absent_inventory_hosts(
    store: MemoryStore, cluster: str
) -> None:
    agent = make_agent(store, "n1", cluster)
    metrics = Metrics(agent, inventory_hosts=("n1", "mac-studio"))
    assert value(metrics, "ringside_member_up", node_id="mac-studio") is None  # not in sync yet
    async with running(agent):
        await until(lambda: "n1" in agent.view.members)
        assert value(metrics, "ringside_member_up", node_id="n1") == 1
        assert value(metrics, "ringside_member_up", node_id="mac-studio") == 0
        other = make_agent(store, "vast-29118471", cluster, eligible=False)
        async with running(other):  # a member the inventory does not list is still shown
            await until(lambda: "vast-29118471" in agent.view.members)
            assert value(metrics, "ringside_member_up", node_id="vast-29118471") == 1
        await until(lambda: "vast-29118471" not in agent.view.members)
        assert value(metrics, "ringside_member_up", node_id="vast-29118471") is None


async def test_no_created_series(store: MemoryStore, cluster: str) -> None:
    """Counters and histograms export no `_created` series: nothing reads them."""
    body, _ = Metrics(make_agent(store, "n1", cluster)).render()
    assert b"_created" not in body
