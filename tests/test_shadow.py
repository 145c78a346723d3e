"""`ringside compare` (shadow mode) against a stand-in for the gossip layer that serves the old
`/status` shape, and a real sidecar."""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from sidecar.testing.localcluster import free_port
from tests.cli_support import ringside
from tests.fleet import Fleet
from tests.served import served


async def test_compare_names_every_difference_that_matters(fleet: Fleet) -> None:
    for node in ("hetzner-cpu1", "hetzner-cpu2"):
        fleet.add(node)
    first = await fleet.wait_converged(["hetzner-cpu1", "hetzner-cpu2"], within_s=20)
    sidecar = fleet.sidecars["hetzner-cpu1"]
    ours = await fleet.get(sidecar, "/status")
    assert ours is not None
    gossip: dict[str, Any] = copy.deepcopy(ours)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(gossip)

    app = web.Application()
    app.router.add_get("/status", status)
    async with served(app) as url:
        same = await ringside("compare", "--gossip", url, "--sidecar", sidecar.url)
        assert same.returncode == 0, same
        assert same.stdout.startswith("gossip and ringside agree")

        other = "hetzner-cpu2" if first["node_id"] == "hetzner-cpu1" else "hetzner-cpu1"
        gossip["leader_id"] = other  # the old layer's bully election picked another
        gossip["all_peers"]["vast-29118471"] = {"node_id": "vast-29118471", "status": "dead"}
        differ = await ringside("compare", "--gossip", url, "--sidecar", sidecar.url)
    assert differ.returncode == 1, differ
    assert differ.stdout.splitlines() == [
        f"leader: gossip says '{other}', ringside says '{first['node_id']}'",
        "dead for gossip only: vast-29118471",
    ]
    silent = await ringside(
        "compare", "--gossip", f"http://127.0.0.1:{free_port()}", "--sidecar", sidecar.url
    )
    assert silent.returncode == 3, silent
    assert silent.stderr.startswith("ringside: the gossip layer at http://127.0.0.1:")
