"""Prometheus metrics for one agent, in a registry of its own.

Gauges are a pure function of the agent's read model (`Agent.state()`, taken once per scrape),
so a gauge can never drift from what `status` says, nor two gauges from each other. Only what
happens between scrapes is counted as it happens, through explicit listeners: keepalive
latencies (`Agent.listen_keepalives`) and cluster events (`EventLog.listen`; the log is a
bounded ring, which a scrape could not count reliably once it wraps).

    metrics = Metrics(agent)  # before or after agent.run() starts
    body, content_type = metrics.render()

`render()` reads the agent unlocked: call it from the agent's event loop thread (an aiohttp
handler), not from a separate exporter thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar import __version__
from sidecar.agent import Agent
from sidecar.events import ClusterEvent
from sidecar.health_rule import orchestrator_ok
from sidecar.state import NodeState

# A loopback etcd answers in about a millisecond; anything near the TTL/3 keepalive period
# (seconds) means the lease is at risk, so the buckets span 1 ms .. 5 s.
KEEPALIVE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# A `_created` series per counter and histogram doubles the series count and no alert or
# dashboard reads it (`promtool check metrics` users asked); the setting is process-wide, and
# a sidecar process exports nothing but ours.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client


class Metrics:
    """The metrics of `agent`, exposed from a private `CollectorRegistry` (never the global
    one, so several agents can share a process, as they do in tests).

    Counters start at construction: events already in the agent's log are counted once then,
    later ones as they are added. Keepalives are observed from the next one on.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        certificates: Mapping[str, datetime] | None = None,
        inventory_hosts: Collection[str] = (),
    ) -> None:
        self.agent = agent
        self.registry = CollectorRegistry()
        expiry = Gauge(
            "ringside_tls_expiry_timestamp_seconds",
            "When each configured etcd TLS certificate expires (unix time); alert weeks ahead.",
            ["certificate"],
            registry=self.registry,
        )
        for role, date in (certificates or {}).items():
            expiry.labels(certificate=role).set(date.timestamp())
        self.keepalive_latency = Histogram(
            "ringside_keepalive_latency_seconds",
            "Round trip of each successful lease keepalive.",
            buckets=KEEPALIVE_BUCKETS_S,
            registry=self.registry,
        )
        self.leader_changes = Counter(
            "ringside_leader_changes",
            "Leader or epoch changes seen in the cluster view (the first load counts as one).",
            registry=self.registry,
        )
        self.member_changes = Counter(
            "ringside_member_changes",
            "Members that joined or left the cluster view (the first load counts as joins).",
            ["kind"],
            registry=self.registry,
        )
        for kind in ("joined", "left"):
            self.member_changes.labels(kind=kind)  # exported as 0 before the first change
        self.keys_restored = Counter(
            "ringside_keys_restored",
            "Times this node wrote one of its own keys again after it was deleted or replaced.",
            ["key"],
            registry=self.registry,
        )
        for key in ("member", "candidate"):
            self.keys_restored.labels(key=key)
        self.health_handovers = Counter(
            "ringside_health_handovers",
            "Times this node handed leadership over because its orchestrator was down.",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(agent.state, inventory_hosts))
        agent.listen_keepalives(self.keepalive_latency.observe)
        for event in agent.events:
            self._count(event)
        agent.events.listen(self._count)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type, for an HTTP response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _count(self, event: ClusterEvent) -> None:
        if event.kind == "leader_changed":
            self.leader_changes.inc()
        elif event.kind == "member_joined":
            self.member_changes.labels(kind="joined").inc()
        elif event.kind == "member_left":
            self.member_changes.labels(kind="left").inc()
        elif event.kind == "health_handover":
            self.health_handovers.inc()
        elif event.kind == "key_restored" and event.detail.get("what") in ("member", "candidate"):
            self.keys_restored.labels(key=str(event.detail["what"])).inc()


class _StateCollector(Collector):
    """Gauges (and the watch reconnect counter): one `NodeState` per scrape."""

    def __init__(self, state: Callable[[], NodeState], inventory_hosts: Collection[str]) -> None:
        self.state = state
        self.inventory_hosts = inventory_hosts

    def collect(self) -> Iterable[Metric]:
        return state_metrics(self.state(), self.inventory_hosts)


def state_metrics(state: NodeState, inventory_hosts: Collection[str] = ()) -> Iterable[Metric]:
    """The gauges for one look at the sidecar; a pure function of `state` (and of the
    inventory's host names, which `ringside_member_up` lists even while they are absent)."""
    now, view, health = state.leadership, state.view, state.quorum

    yield _gauge("ringside_is_leader", "1 while this node may act as leader.", now.is_leader)
    # No leader, no epoch: the series is absent then rather than NaN or 0, so dashboards
    # show a gap and `max(ringside_epoch)` stays meaningful.
    yield _gauge("ringside_epoch", "Fencing epoch of the current leader.", now.epoch)
    yield _gauge("ringside_members_alive", "Members with a live lease.", view.alive)
    yield _gauge("ringside_view_synced", "1 while the view follows etcd.", view.synced)
    yield _gauge(
        "ringside_view_confirmed_age_seconds",
        "Seconds since etcd last answered through a quorum; absent before the first answer.",
        state.confirmed_age_s,
    )
    yield _gauge(
        "ringside_ignored_candidates",
        "Keys under election/ that are no valid candidate (forged, stray, on no lease).",
        len(view.ignored),
    )
    yield _gauge("ringside_quorum_ok", "1 while etcd has a quorum.", health.quorum_ok)
    yield _gauge("ringside_voters_healthy", "Healthy etcd voters.", health.voters_healthy)
    yield _gauge("ringside_voters", "etcd voters in the cluster.", health.voters_total)
    yield _gauge(
        "ringside_lease_ttl_seconds",
        "TTL of our lease; keepalives go every third of it.",
        state.lease.ttl if state.lease is not None else None,
    )
    yield _gauge(
        "ringside_lease_remaining_seconds",
        "Seconds until etcd could expire our lease, by our clock; absent without a session.",
        max(0.0, state.lease.remaining_s) if state.lease is not None else None,
    )

    checked = state.orchestrator
    yield _gauge(
        "ringside_orchestrator_healthy",
        "1 while this node's orchestrator passes its health check; absent when not checked.",
        checked.healthy if checked is not None else None,
    )
    yield _gauge(
        "ringside_leading_with_orchestrator_down",
        "1 while this node leads with its orchestrator down, no other candidate being healthy.",
        state.leadership_note is not None,  # the state carries it only while we lead
    )
    yield _gauge(
        "ringside_members_orchestrator_down",
        "Live members whose record says their orchestrator is failing its health check.",
        sum(1 for m in view.members.values() if not orchestrator_ok(m)),
    )

    member_up = GaugeMetricFamily(
        "ringside_member_up",
        "1 for each live member (a live lease); 0 for each inventory host that is not live. "
        "Only while the view follows etcd.",
        labels=["node_id"],
    )
    if view.synced:
        for node_id in sorted({*view.members, *inventory_hosts}):
            member_up.add_metric([node_id], node_id in view.members)
    yield member_up

    up = GaugeMetricFamily(
        "ringside_etcd_endpoint_up",
        "1 if the last request to the endpoint got an answer; 0 if not or not tried yet.",
        labels=["endpoint"],
    )
    for endpoint in state.store.endpoints:
        up.add_metric([endpoint.url], endpoint.reachable is True)
    yield up

    info = GaugeMetricFamily(
        "ringside_info",
        "Always 1; labels identify the sidecar.",
        labels=["node_id", "cluster", "version"],
    )
    info.add_metric([state.node_id, state.cluster, __version__], 1)
    yield info

    yield CounterMetricFamily(
        "ringside_watch_reconnects_total",
        "Times the cluster watch had to resume on another connection.",
        value=state.store.watch_reconnects,
    )


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    """A gauge without labels; no sample at all when `value` is None."""
    family = GaugeMetricFamily(name, documentation)
    if value is not None:
        family.add_metric([], value)
    return family
