"""Every route of the local API, through a real HTTP client, checked against the OpenAPI
document. The agent runs in-process on the in-memory store (the cluster-level checks of the
same routes are in test_api_cluster.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from sidecar.agent import Agent
from sidecar.api.server import MAX_BODY_BYTES, Handler, create_app, openapi_document
from sidecar.asyncio_compat import timeout
from sidecar.inventory import load_inventory
from sidecar.metrics import Metrics
from sidecar.store.memory import MemoryStore
from tests.agents import running_agent, until
from tests.api_support import assert_documented
from tests.paths import EXAMPLE_INVENTORY as INVENTORY

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@web.middleware
async def pretend_remote(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Test-only: play a caller from another host, as a reverse proxy would present it."""
    remote = request.headers.get("X-Test-Remote")
    return await handler(request.clone(remote=remote) if remote else request)


@pytest.fixture
async def leader_agent(store: MemoryStore, cluster: str) -> AsyncIterator[Agent]:
    async with running_agent(store, "hetzner-cpu1", cluster, token="s3cret") as agent:
        await until(lambda: agent.leadership().is_leader and agent.registered)
        yield agent


@pytest.fixture
async def client(
    leader_agent: Agent, aiohttp_client: ClientFactory
) -> TestClient[web.Request, web.Application]:
    app = create_app(
        leader_agent,
        inventory=load_inventory(INVENTORY),
        render_metrics=Metrics(leader_agent).render,
    )
    app.middlewares.insert(0, pretend_remote)
    return await aiohttp_client(app)


async def get(client: TestClient[Any, Any], url: str, route: str | None = None) -> tuple[int, Any]:
    """GET and check the answer against the OpenAPI document for `route` (default: url)."""
    response = await client.get(url)
    body = await response.json()
    assert_documented(route or url.split("?", maxsplit=1)[0], "GET", response.status, body)
    return response.status, body


def test_every_route_is_documented_and_every_documented_route_exists(leader_agent: Agent) -> None:
    app = create_app(leader_agent)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method.upper(), path)
        for path, operations in openapi_document()["paths"].items()
        for method in operations
    }
    assert served == documented


async def test_health_and_ready(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/health")
    assert (status, body["status"], body["node_id"]) == (200, "ok", "hetzner-cpu1")
    status, body = await get(client, "/ready?wait=2", "/ready")
    assert (status, body["ready"], body["leader"]) == (200, True, "hetzner-cpu1")
    for bad in ("abc", "-1", "301", "nan"):
        status, body = await get(client, f"/ready?wait={bad}", "/ready")
        assert status == 400
        assert "wait" in body["error"]


async def test_not_ready_until_registered(
    store: MemoryStore, cluster: str, aiohttp_client: ClientFactory
) -> None:
    async with running_agent(store, "observer-1", cluster, eligible=False) as agent:
        client = await aiohttp_client(create_app(agent))
        status, body = await get(client, "/ready?wait=0.2", "/ready")
        assert status == 503  # registered perhaps, but nobody leads: not ready
        assert body["ready"] is False
        assert body["reason"]


async def test_status_describes_this_node_and_the_cluster(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/v1/status")
    assert status == 200
    assert body["node_id"] == "hetzner-cpu1"
    assert body["is_leader"] is True
    assert body["leader"] == "hetzner-cpu1"
    assert isinstance(body["epoch"], int)
    assert body["alive"] == 1
    assert body["members"][0]["addresses"] == ["203.0.113.21"]
    assert body["quorum_ok"] is True
    assert body["voters"]["total"] == 1
    assert body["etcd"]["connection"] == "connected"
    assert "lambda-gh200-3" in body["inventory_missing"]


async def test_members_and_one_member(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/v1/members")
    assert status == 200
    assert [m["node_id"] for m in body["members"]] == ["hetzner-cpu1"]
    status, body = await get(client, "/v1/members/hetzner-cpu1", "/v1/members/{node_id}")
    assert (status, body["is_leader"], body["labels"]) == (200, True, {"gpu": "none"})
    status, body = await get(client, "/v1/members/nobody", "/v1/members/{node_id}")
    assert status == 404
    assert body["node_id"] == "nobody"


async def test_leader_and_fence(client: TestClient[Any, Any], leader_agent: Agent) -> None:
    status, body = await get(client, "/v1/leader")
    epoch = leader_agent.leadership().epoch
    assert epoch is not None
    assert (status, body["is_self"], body["epoch"]) == (200, True, epoch)
    assert 0 < body["valid_for_s"] <= 2
    status, body = await get(client, f"/v1/fence?epoch={epoch}", "/v1/fence")
    assert (status, body["ok"]) == (200, True)
    status, body = await get(client, f"/v1/fence?epoch={epoch - 1}", "/v1/fence")
    assert (status, body["error"]) == (409, "stale epoch")
    for query in ("", "?epoch=x", "?epoch=-3", f"?epoch={2**64}"):
        status, body = await get(client, f"/v1/fence{query}", "/v1/fence")
        assert status == 400, query


async def test_orchestrator_status_shape(client: TestClient[Any, Any]) -> None:
    status, body = await get(client, "/status")
    assert status == 200
    assert body["role"] == "leader"
    assert body["leader_id"] == body["effective_leader_id"] == "hetzner-cpu1"
    assert body["alive_peers"] == 0  # peers exclude this node
    assert body["peers"] == {}
    assert body["all_peers"]["mac-studio"]["status"] == "dead"
    assert "hetzner-cpu1" not in body["all_peers"]
    assert body["self"]["node_id"] == "hetzner-cpu1"
    assert (body["voter_quorum_size"], body["voters_alive"], body["voter_quorum_ok"]) == (
        1,
        1,
        True,
    )


async def test_events_replay_since_a_revision(client: TestClient[Any, Any]) -> None:
    response = await client.get("/v1/events?since=0")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    text = ""
    async with timeout(5):
        while "event: leader_changed" not in text:
            text += (await response.content.readany()).decode()
    response.close()
    blocks = [b for b in text.split("\n\n") if b.startswith("id:")]
    data = [json.loads(b.split("data: ", 1)[1]) for b in blocks]
    assert {"member_joined", "leader_changed"} <= {d["kind"] for d in data}
    assert all(isinstance(d["revision"], int) for d in data)


async def test_events_stream_live_changes(
    client: TestClient[Any, Any], leader_agent: Agent
) -> None:
    response = await client.get("/v1/events")
    async with running_agent(leader_agent.store, "hetzner-cpu2", leader_agent.config.cluster):
        text = ""
        async with timeout(5):
            while "hetzner-cpu2" not in text:
                text += (await response.content.readany()).decode()
    response.close()
    assert "event: member_joined" in text


async def test_resign_checks_caller_token_and_role(
    client: TestClient[Any, Any], leader_agent: Agent
) -> None:
    route = "/v1/leader/resign"
    foreign = await client.post(route, headers={"X-Test-Remote": "192.0.2.10"})
    assert foreign.status == 403
    no_token = await client.post(route)
    assert no_token.status == 401
    wrong = await client.post(route, headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    for response in (foreign, no_token, wrong):
        assert_documented(route, "POST", response.status, await response.json())
    assert leader_agent.leadership().is_leader  # none of those did anything
    epoch = leader_agent.leadership().epoch
    ok = await client.post(route, headers={"Authorization": "Bearer s3cret"})
    body = await ok.json()
    assert_documented(route, "POST", ok.status, body)
    assert (ok.status, body["resigned"], body["epoch"]) == (200, True, epoch)
    # Alone, it campaigns again at once: a new, higher epoch, never the old one.
    await until(lambda: (leader_agent.leadership().epoch or 0) > (epoch or 0))


async def test_resign_on_a_follower_is_409(
    store: MemoryStore, cluster: str, aiohttp_client: ClientFactory, leader_agent: Agent
) -> None:
    async with running_agent(store, "hetzner-cpu2", leader_agent.config.cluster) as follower:
        await until(lambda: follower.registered and follower.view.alive == 2)
        client = await aiohttp_client(create_app(follower))
        response = await client.post("/v1/leader/resign")
        body = await response.json()
        assert_documented("/v1/leader/resign", "POST", response.status, body)
        assert response.status == 409
        assert body["leader"] == "hetzner-cpu1"


async def test_errors_are_json_with_the_right_status(client: TestClient[Any, Any]) -> None:
    unknown = await client.get("/v2/nothing")
    assert (unknown.status, (await unknown.json())["error"]) == (404, "not found")
    wrong_method = await client.post("/v1/status")
    assert wrong_method.status == 405
    assert "error" in await wrong_method.json()
    assert "GET" in wrong_method.headers["Allow"]
    big = await client.post(
        "/v1/leader/resign", data=b"x" * (MAX_BODY_BYTES + 1),
        headers={"Authorization": "Bearer s3cret"},
    )  # fmt: skip
    assert big.status == 413
    assert "error" in await big.json()


async def test_metrics_and_openapi(client: TestClient[Any, Any], leader_agent: Agent) -> None:
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert "ringside_is_leader 1.0" in text
    status, body = await get(client, "/openapi.json")
    assert status == 200
    assert body["openapi"].startswith("3.1")


def test_the_openapi_document_is_valid_openapi() -> None:
    """Checked by the OpenAPI project's validator: a YAML slip (an unquoted comma in a flow
    mapping once cut a description short and added a junk key) fails here."""
    validate(openapi_document())  # raises OpenAPIValidationError, naming the place


async def test_resign_refuses_what_a_web_page_can_send(
    client: TestClient[Any, Any], leader_agent: Agent
) -> None:
    """A page in the operator's browser can post to 127.0.0.1: its request carries an Origin,
    and without a preflight its body can only be a form or text."""
    route, token = "/v1/leader/resign", {"Authorization": "Bearer s3cret"}
    from_page = await client.post(route, headers={**token, "Origin": "https://evil.example"})
    as_text = await client.post(route, data=b"{}", headers={**token, "Content-Type": "text/plain"})
    as_form = await client.post(route, data={"a": "b"}, headers=token)
    assert (from_page.status, as_text.status, as_form.status) == (403, 415, 415)
    for response in (from_page, as_text, as_form):
        assert_documented(route, "POST", response.status, await response.json())
    assert leader_agent.leadership().is_leader  # none of those did anything
    as_json = await client.post(
        route, data=b"{}", headers={**token, "Content-Type": "application/json"}
    )
    assert as_json.status == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8776", "127.0.0.1.nip.io", ""])
async def test_a_host_header_naming_another_site_is_refused(
    client: TestClient[Any, Any], host: str
) -> None:
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 reads the API under it."""
    response = await client.get("/v1/status", headers={"Host": host})
    assert response.status == 421
    assert "Host" in (await response.json())["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8776", "localhost:8776", "[::1]:8776", "10.0.0.5"])
async def test_a_host_header_naming_an_address_or_localhost_is_served(
    client: TestClient[Any, Any], host: str
) -> None:
    response = await client.get("/health", headers={"Host": host})
    assert response.status == 200


@pytest.mark.parametrize("epoch", ["3_1", " 31", "%2031", "\uff13\uff11", "+31", "31.0", "0x1f"])
async def test_numbers_are_plain_digits(client: TestClient[Any, Any], epoch: str) -> None:
    """int() would read several of these as 31: a fencing check must not guess."""
    status, body = await get(client, f"/v1/fence?epoch={epoch}", "/v1/fence")
    assert status == 400
    assert body["error"] == "epoch must be an integer"
    if epoch != "31.0":  # a wait may have decimals
        status, body = await get(client, f"/ready?wait={epoch}", "/ready")
        assert (status, body["error"]) == (400, "wait must be a number")
