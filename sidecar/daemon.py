"""`ringside run`: one sidecar process, from configuration to a clean exit.

Exit codes: 0 after SIGTERM/SIGINT (stopped claiming at once; lease revoked when etcd answers);
1 when the sidecar refuses to run (its node id is held by another live node, another sidecar
holds this node's lock, the API port is taken); 2 for bad configuration (raised as `ConfigError`
to the CLI)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web

from sidecar.addresses import discovered_addresses
from sidecar.agent import Agent, Parts
from sidecar.api.server import create_app
from sidecar.api.serving import AcceptErrors, Limits, guarded, json_errors_factory
from sidecar.api_token import ensure_token, token_path
from sidecar.certificates import expiries
from sidecar.config import LoadedConfig
from sidecar.errors import ConfigError, RingsideError
from sidecar.etcd_connection import open_store
from sidecar.event_log import EventLog
from sidecar.history import HistoryGuard
from sidecar.hooks import RoleHooks
from sidecar.identity import HostFacts, resolve_identity
from sidecar.inventory import Inventory
from sidecar.journal import Journal
from sidecar.keys import Keys
from sidecar.lock import InstanceLock, default_lock_path
from sidecar.membership import MemberKey
from sidecar.metrics import Metrics
from sidecar.orchestrator import OrchestratorWatch
from sidecar.promise import PromiseFile
from sidecar.quorum import QuorumMonitor
from sidecar.records import MemberRecord, printable
from sidecar.settings import DNS_LABEL, RingsideConfig
from sidecar.store.base import Store
from sidecar.view import Rules, ViewKeeper

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1


class ListenFailed(RingsideError):
    """The local API address cannot be bound (taken, or not an address of this host)."""


def build_agent(
    config: RingsideConfig,
    node_id: str,
    store: Store,
    record: MemberRecord,
    *,
    previous_instance: str | None = None,
    quorum_interval_s: float = 2.0,
    promises: PromiseFile | None = None,
) -> Agent:
    """An agent and its collaborators, wired from the configuration: the one place that
    knows which part talks to which (the orchestrator check publishes through our member key;
    the agent listens to the view keeper and the quorum monitor)."""
    keys = Keys(config.cluster)
    preferred = config.leader.preferred == node_id
    proving = {"preferred": preferred, "proof_ttl": config.lease_ttl}
    member = MemberKey(store, keys, record.model_copy(update=proving))
    checks = config.orchestrator
    orchestrator = (
        OrchestratorWatch(
            checks.health_url,
            interval_s=checks.check_interval,
            failures_before_unhealthy=checks.failures_before_unhealthy,
            publish=member.publish_health,
        )
        if checks.health_url
        else None
    )
    leader = config.leader
    events = EventLog()
    rules = Rules(max_ttl_s=config.max_lease_ttl, legacy=leader.upgrade_from_0_1)
    parts = Parts(
        keys=keys,
        member=member,
        view=ViewKeeper(store, keys, rules=rules),
        quorum=QuorumMonitor(store, interval_s=quorum_interval_s, probe_key=keys.prefix),
        hooks=RoleHooks(leader.on_elected, leader.on_demoted, leader.hook_timeout, node_id),
        events=events,
        guard=HistoryGuard(),
        orchestrator=orchestrator,
        journal=Journal(store, keys, events, node_id=node_id) if leader.eligible else None,
    )
    return Agent(
        config, node_id, store, parts, previous_instance=previous_instance, promises=promises
    )


def with_preference(config: RingsideConfig, inventory: Inventory | None) -> RingsideConfig:
    """`config` with `leader.preferred` resolved: its own value when set, else the
    inventory's `preferred_leader` (decision 0017), ignored with a warning when it is no node
    id, since the orchestrator's file is not ours to refuse."""
    leader = config.leader
    if leader.preferred is not None or inventory is None or inventory.preferred_leader is None:
        return config
    named = inventory.preferred_leader
    if not DNS_LABEL.fullmatch(named):
        log.warning(
            "the inventory's preferred_leader %r is not a node id; no preferred leader",
            printable(named),
        )
        named = ""
    return config.model_copy(update={"leader": leader.model_copy(update={"preferred": named})})


def run_sidecar(loaded: LoadedConfig) -> int:
    """Resolve identity, take the node lock, serve until a signal; return the exit code."""
    config = loaded.config
    identity = resolve_identity(loaded, os.environ, HostFacts.gather())
    lock = InstanceLock(config.lock_file or default_lock_path(config.cluster))
    try:
        with lock:
            log.info(
                "ringside starting as %s (identity from %s), etcd %s",
                identity.node_id,
                identity.source,
                ",".join(config.etcd.endpoints),
            )
            return asyncio.run(_serve(config, identity.node_id, identity.inventory, lock))
    except ConfigError:
        raise
    except RingsideError as e:  # duplicate node id, node lock held, API port taken
        log.error("%s", e, extra={"event": "refused"})
        return EXIT_REFUSED


async def _serve(
    config: RingsideConfig, node_id: str, inventory: Inventory | None, lock: InstanceLock
) -> int:
    config = with_preference(config, inventory)
    store = open_store(
        config.etcd,
        call_timeout=config.etcd_call_timeout,
        default_user=Keys(config.cluster).etcd_user(node_id),
    )
    record = MemberRecord.for_this_process(
        node_id,
        advertise=config.advertise_addresses,
        discovered=discovered_addresses(
            inventory.addresses_of(node_id) if inventory is not None else ()
        ),
        labels=dict(config.labels),
        eligible=config.leader.eligible,
        instance=lock.instance,
    )
    agent = build_agent(
        config,
        node_id,
        store,
        record,
        previous_instance=lock.previous_instance,
        promises=PromiseFile.beside(lock.path),
    )
    token = config.http.token or ensure_token(token_path(config.http.token_file, lock.path))
    tls = config.etcd.tls
    certificates = expiries({"ca": tls.ca, "client": tls.cert} if tls is not None else {})
    metrics = Metrics(
        agent,
        certificates=certificates,
        inventory_hosts=tuple(inventory.hosts) if inventory is not None else (),
    )
    app = create_app(agent, inventory=inventory, render_metrics=metrics.render, token=token)
    # In-flight requests get half a second at shutdown: SIGTERM must end the process in 2 s.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrors())
    listener: asyncio.Server | None = None
    try:
        assert runner.server is not None  # set up above
        try:  # slow or too many clients cannot starve the API (sidecar.api.serving)
            listener = await loop.create_server(
                guarded(json_errors_factory(runner.server), Limits()),
                config.http.host,
                config.http.port,
            )
        except OSError as e:
            raise ListenFailed(
                f"cannot serve the local API on {config.http.listen}: {e.strerror}"
            ) from None
        stop = asyncio.Event()

        def on_signal() -> None:
            agent.stop_claiming()  # before the loop answers anything else (rule 13)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await agent.run(stop)
        log.info("ringside stopped: %s", agent.farewell, extra={"event": "stopped"})
        return EXIT_OK
    finally:
        if listener is not None:
            listener.close()  # no new connections; runner.cleanup() ends the open ones
        await runner.cleanup()
        await store.close()
