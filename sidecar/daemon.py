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
from sidecar.agent import Agent
from sidecar.api.server import create_app
from sidecar.config import LoadedConfig
from sidecar.errors import ConfigError, RingsideError
from sidecar.etcd_connection import open_store
from sidecar.identity import HostFacts, resolve_identity
from sidecar.inventory import Inventory
from sidecar.lock import InstanceLock, default_lock_path
from sidecar.metrics import Metrics
from sidecar.records import MemberRecord
from sidecar.settings import RingsideConfig

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_REFUSED = 1


class ListenFailed(RingsideError):
    """The local API address cannot be bound (taken, or not an address of this host)."""


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
    store = open_store(config.etcd, call_timeout=config.etcd_call_timeout)
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
    agent = Agent(config, node_id, store, record, previous_instance=lock.previous_instance)
    app = create_app(agent, inventory=inventory, render_metrics=Metrics(agent).render)
    # In-flight requests get half a second at shutdown: SIGTERM must end the process in 2 s.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.http.host, config.http.port)
        try:
            await site.start()
        except OSError as e:
            raise ListenFailed(
                f"cannot serve the local API on {config.http.listen}: {e.strerror}"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            agent.stop_claiming()  # before the loop answers anything else (rule 13)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await agent.run(stop)
        log.info("ringside stopped: %s", agent.farewell, extra={"event": "stopped"})
        return EXIT_OK
    finally:
        await runner.cleanup()
        await store.close()
