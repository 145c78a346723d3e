"""An aiohttp application served on a free loopback port, from the test's own event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from sidecar.testing.localcluster import free_port


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1; yields its base URL; stops it when the block ends."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
