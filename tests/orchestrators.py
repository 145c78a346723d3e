"""A stand-in orchestrator per node: a real HTTP server whose health answer each test flips
(the `orchestrators` fixture, in conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fleet import Fleet
from tests.waiting import wait_for

INTERVAL_S = 1.0
FAILURES = 2
DOWN_AFTER_S = INTERVAL_S * FAILURES  # the bound: this + 1 s to a new leader


@dataclass
class Orchestrators:
    """One stand-in orchestrator per node: GET /<node>/health answers `status[node]`."""

    status: dict[str, int] = field(default_factory=dict)
    url: str = ""

    async def health(self, request: web.Request) -> web.Response:
        code = self.status.get(request.match_info["node"], 200)
        return web.json_response({"ok": code == 200}, status=code)

    def settings(self, node: str, rejoin_after: float = 30.0) -> dict[str, Any]:
        self.status.setdefault(node, 200)
        return {
            "orchestrator": {
                "health_url": f"{self.url}/{node}/health",
                "check_interval": INTERVAL_S,
                "failures_before_unhealthy": FAILURES,
                "rejoin_after": rejoin_after,
            }
        }


async def serve_orchestrators() -> AsyncIterator[Orchestrators]:
    fake = Orchestrators()
    app = web.Application()
    app.router.add_get("/{node}/health", fake.health)
    async with TestServer(app, host="127.0.0.1") as server:
        fake.url = str(server.make_url("")).rstrip("/")
        yield fake


async def healthy_everywhere(fleet: Fleet, nodes: list[str]) -> None:
    """Every sidecar's view shows every node's orchestrator checked and healthy."""

    async def seen() -> bool:
        for sidecar in fleet.running():
            status = await fleet.get(sidecar, "/v1/status")
            if status is None:
                return False
            found = {m["node_id"]: m["orchestrator"] for m in status["members"]}
            if any(not (found.get(n) or {}).get("healthy") for n in nodes):
                return False
        return True

    await wait_for(seen, 15, what="orchestrators not seen healthy everywhere")
