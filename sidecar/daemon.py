"""`ringside run`: one sidecar process, from configuration to a clean exit.

Exit codes: 0 after SIGTERM/SIGINT (leadership handed over, lease revoked); 1 when the sidecar
refuses to run (its node id is held by another live node, another sidecar holds this node's
lock, the API port is taken); 2 for bad configuration (raised as `ConfigError` to the CLI).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import web

from sidecar.agent import Agent
from sidecar.api import create_app
from sidecar.config import LoadedConfig
from sidecar.connect import open_store
from sidecar.errors import ConfigError, RingsideError
from sidecar.identity import HostFacts, resolve_identity
from sidecar.inventory import Inventory
from sidecar.lock import InstanceLock, default_lock_path
from sidecar.membership import MemberRecord, discovered_addresses
from sidecar.metrics import Metrics
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
            return asyncio.run(_serve(config, identity.node_id, identity.inventory))
    except ConfigError:
        raise
    except RingsideError as e:  # duplicate node id, node lock held, API port taken
        log.error("%s", e, extra={"event": "refused"})
        return EXIT_REFUSED


async def _serve(config: RingsideConfig, node_id: str, inventory: Inventory | None) -> int:
    store = open_store(config.etcd)
    record = MemberRecord.for_this_process(
        node_id,
        advertise=config.advertise_addresses,
        discovered=discovered_addresses(),
        labels=dict(config.labels),
        eligible=config.leader.eligible,
    )
    agent = Agent(config, node_id, store, record)
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
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)
        log.info(
            "ringside stopped: lease revoked, leadership handed over", extra={"event": "stopped"}
        )
        return EXIT_OK
    finally:
        await runner.cleanup()
        await store.close()
