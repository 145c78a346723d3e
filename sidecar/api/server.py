"""The local HTTP API the orchestrator reads (127.0.0.1:8776 by default).

Every answer is a pure function of the agent's read model (`Agent.state()`, one per request;
the bodies are `sidecar.api.bodies`); nothing here
asks etcd, so the API stays fast and keeps answering while etcd is unreachable, and says so.
Every body is JSON, every error `{"error": ...}` with a 4xx status; an unexpected exception is
logged and answered 500 `{"error": "internal error"}`, never with a traceback. The routes and
their answers are documented in `sidecar/api/openapi.yaml`, served at `/openapi.json`.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from sidecar.agent import REQUEST_S, Agent, SwitchoverRefused
from sidecar.api.bodies import (
    leader_document,
    member_document,
    members_document,
    orchestrator_status,
    readiness,
    status_document,
)
from sidecar.api.streams import MAX_STREAMS, StreamSlots
from sidecar.asyncio_compat import timeout
from sidecar.election import reported_validity
from sidecar.inventory import Inventory
from sidecar.settings import DNS_LABEL
from sidecar.store.errors import StoreError

log = logging.getLogger(__name__)


@dataclass
class ApiState:
    """What the handlers read: the agent, the inventory and the metrics renderer; and the
    slots the routes that hold a connection share (`sidecar.api.streams`)."""

    agent: Agent
    inventory: Inventory | None = None
    render_metrics: Callable[[], tuple[bytes, str]] | None = None
    token: str | None = None  # required by mutations when set
    started: float = field(default_factory=time.monotonic)
    streams: StreamSlots = field(default_factory=StreamSlots)  # streams and long polls


STATE: web.AppKey[ApiState] = web.AppKey("state", ApiState)

MAX_BODY_BYTES = 16 * 1024
MAX_WAIT_S = 300.0
SSE_KEEPALIVE_S = 15.0
CLIENT_GONE_CHECK_S = 1.0  # how soon a stream or long poll notices its client left
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, **fields: Any) -> web.Response:
    return web.json_response({"error": message, **fields}, status=status)


def _host_allowed(request: web.Request, listen_host: str) -> bool:
    """A DNS-rebinding page reaches us under its own domain name: answer only requests that
    name us by an IP address, `localhost`, or the host we listen on."""
    host = request.headers.get("Host", "")
    name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    if name.lower() in ("localhost", listen_host.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@web.middleware
async def named_as_ourselves(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (421) a request whose Host names another site: DNS rebinding (`_host_allowed`)."""
    if not _host_allowed(request, request.app[STATE].agent.config.http.host):
        return error(421, "the Host header must be an IP address, localhost or our listen host")
    return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes a JSON error; nothing leaks a traceback to the client."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        response = error(e.status, e.reason.lower())
        if headers:
            response.headers.update(headers)
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("API: unexpected error on %s %s", request.method, request.path)
        return error(500, "internal error")


_DECIMAL = re.compile(r"[0-9]{1,19}(\.[0-9]{1,9})?", re.ASCII)
_INTEGER = re.compile(r"[0-9]{1,19}", re.ASCII)


def _float_param(request: web.Request, name: str, low: float, high: float) -> float | None:
    """A plain decimal number: Python's float() would also take "1_0", " 10", "1e1", "inf"
    and fullwidth digits, none of which a caller means."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _DECIMAL.fullmatch(raw):
        raise web.HTTPBadRequest(reason=f"{name} must be a number")
    value = float(raw)
    if not low <= value <= high:
        raise web.HTTPBadRequest(reason=f"{name} must be between {low:g} and {high:g}")
    return value


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw):  # int() would read "3_1", " 31" and fullwidth 31 as 31
        raise web.HTTPBadRequest(reason=f"{name} must be an integer")
    value = int(raw)
    if value >= 2**63:
        raise web.HTTPBadRequest(reason=f"{name} must be a revision (0 to 2^63-1)")
    return value


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    uptime = time.monotonic() - state.started
    agent = state.agent
    return web.json_response(
        {"status": "ok", "node_id": agent.node_id, "uptime_s": round(uptime, 3)}
    )


async def ready(request: web.Request) -> web.Response:
    """`?wait=S` holds the request until ready, up to S seconds: a long poll, so only while a
    stream slot is free (`sidecar.api.streams`); a node ready at once answers without one."""
    wait_s = _float_param(request, "wait", 0.0, MAX_WAIT_S) or 0.0
    api = request.app[STATE]
    agent = api.agent
    deadline = time.monotonic() + wait_s
    state = agent.state()
    reason = readiness(state)
    if reason is not None and wait_s > 0:
        if not api.streams.take():
            return api.streams.refusal()
        try:
            while reason is not None and time.monotonic() < deadline:
                await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                if _client_gone(request):
                    break  # nobody to answer: give the slot back now, not after `wait`
                state = agent.state()
                reason = readiness(state)
        finally:
            api.streams.give_back()
    if reason is not None:
        return web.json_response({"ready": False, "reason": reason}, status=503)
    now = state.leadership
    return web.json_response({"ready": True, "leader": now.leader, "epoch": now.epoch})


async def status(request: web.Request) -> web.Response:
    api = request.app[STATE]
    return web.json_response(status_document(api.agent.state(), api.inventory))


async def orchestrator(request: web.Request) -> web.Response:
    api = request.app[STATE]
    return web.json_response(orchestrator_status(api.agent.state(), api.inventory))


async def members(request: web.Request) -> web.Response:
    return web.json_response(members_document(request.app[STATE].agent.state()))


async def member(request: web.Request) -> web.Response:
    state = request.app[STATE].agent.state()
    node_id = request.match_info["node_id"]
    found = state.view.members.get(node_id)
    if found is None:
        return error(404, "no such live member", node_id=node_id)
    return web.json_response(member_document(found, state.leadership.leader))


async def leader(request: web.Request) -> web.Response:
    return web.json_response(leader_document(request.app[STATE].agent.state()))


async def fence(request: web.Request) -> web.Response:
    """200 only while `epoch` is the current epoch and this node's leadership is valid now."""
    epoch = _int_param(request, "epoch")
    if epoch is None:
        raise web.HTTPBadRequest(reason="epoch is required")
    now = request.app[STATE].agent.leadership()
    fields = {"epoch": now.epoch, "leader": now.leader, "is_self": now.is_leader}
    if now.suspended:  # it cannot vouch either way until etcd answers (decision 0026)
        return error(503, "this node cannot vouch for any epoch now", reason=now.reason, **fields)
    if not now.is_leader:
        return error(409, "this node is not the leader", reason=now.reason, **fields)
    if epoch != now.epoch:
        return error(409, "stale epoch", asked=epoch, **fields)
    return web.json_response(
        {"ok": True, "valid_for_s": reported_validity(now.valid_for_s), **fields}
    )


def _refuse_mutation(request: web.Request) -> web.Response | None:
    """Mutating routes: loopback callers only, never from a web page (a browser sends
    `Origin`, and a form can post anything but JSON without asking first), and the token
    when one is configured."""
    try:
        local = ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        local = False
    if not local:
        return error(403, "mutating routes only answer loopback callers")
    if "Origin" in request.headers:
        return error(403, "mutating routes do not answer web pages (the request has an Origin)")
    if request.can_read_body and request.content_type != "application/json":
        return error(415, "a body must be application/json")
    token = request.app[STATE].token
    if token:
        given = request.headers.get("Authorization", "")
        # A header that is not UTF-8 arrives with surrogate escapes: compare its bytes, as sent.
        presented = given.encode(errors="surrogateescape")
        if not hmac.compare_digest(presented, f"Bearer {token}".encode()):
            return error(401, "missing or wrong token (Authorization: Bearer <token>)")
    return None


async def resign(request: web.Request) -> web.Response:
    refusal = _refuse_mutation(request)
    if refusal is not None:
        return refusal
    await request.read()  # enforce the body limit on chunked uploads too
    agent = request.app[STATE].agent
    epoch = agent.leadership().epoch
    if not await agent.resign():
        return error(409, "not the leader", leader=agent.leadership().leader, epoch=epoch)
    return web.json_response({"resigned": True, "epoch": epoch})


async def switchover(request: web.Request) -> web.Response:
    """Ask the leader, wherever it runs, to hand over (`?to=NODE`: to that node), through a
    request key in etcd (decision 0016); 202 with the epoch asked of, 409 with why not.
    `?timeout=S` (1-600, default 30): withdrawn if not done by then."""
    refusal = _refuse_mutation(request)
    if refusal is not None:
        return refusal
    await request.read()
    to = request.query.get("to") or None
    if to is not None and not DNS_LABEL.fullmatch(to):
        return error(400, "to must be a node id")
    timeout = _float_param(request, "timeout", 1, 600) or REQUEST_S
    agent = request.app[STATE].agent
    try:
        epoch = await agent.request_switchover(to, timeout_s=timeout)
    except SwitchoverRefused as e:
        now = agent.leadership()
        return error(409, str(e), leader=now.leader, epoch=now.epoch)
    except StoreError as e:
        return error(503, f"etcd did not take the request: {e}")
    return web.json_response({"requested": True, "to": to, "epoch": epoch}, status=202)


HISTORY_TIMEOUT_S = 5.0


async def history(request: web.Request) -> web.Response:
    """The cluster history recorded in etcd (decision 0018): `?since=UNIX_TIME`, `?node=ID`.
    The one route that asks etcd rather than answering from memory: 503 when it cannot."""
    since = _float_param(request, "since", 0, 2**40) or 0.0
    node = request.query.get("node") or None
    if node is not None and not DNS_LABEL.fullmatch(node):
        return error(400, "node must be a node id")
    api = request.app[STATE]
    if not api.streams.take():  # it may wait on etcd for seconds: counted as a long poll
        return api.streams.refusal()
    try:
        async with timeout(HISTORY_TIMEOUT_S):
            found = await api.agent.history(since=since, node=node)
    except (StoreError, asyncio.TimeoutError) as e:
        return error(503, f"cannot read the cluster history from etcd: {e or 'no answer'}")
    finally:
        api.streams.give_back()
    return web.json_response({"events": [e.document() for e in found]})


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events; `?since=REV` first replays what is still remembered after REV.
    Each stream holds one of the stream slots (`sidecar.api.streams`) while it is open."""
    since = _int_param(request, "since")
    api = request.app[STATE]
    if not api.streams.take():
        return api.streams.refusal()
    try:
        return await _stream_events(request, since)
    finally:
        api.streams.give_back()


async def _stream_events(request: web.Request, since: int | None) -> web.StreamResponse:
    log_ = request.app[STATE].agent.events
    # One step: what happened until now is a copy to replay, everything later comes through
    # the queue, so a slow replay neither sees the log change under it nor misses an event.
    replay, queue = log_.subscribe_since(since) if since is not None else ((), log_.subscribe())
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)  # inside the try: a client gone already unsubscribes
        for past in replay:
            await response.write(_sse(past.kind, past.revision, past.document()))
        written_at = time.monotonic()
        while True:
            try:
                async with timeout(CLIENT_GONE_CHECK_S):
                    event = await queue.get()
            except asyncio.TimeoutError:
                if _client_gone(request):
                    break
                if time.monotonic() - written_at >= SSE_KEEPALIVE_S:
                    await response.write(b": keepalive\n\n")
                    written_at = time.monotonic()
                continue
            if event is None:
                break  # shutting down, or this client fell too far behind (it resumes ?since=)
            await response.write(_sse(event.kind, event.revision, event.document()))
            written_at = time.monotonic()
    except ConnectionResetError:
        pass
    finally:
        log_.unsubscribe(queue)
    return response


def _client_gone(request: web.Request) -> bool:
    """The client closed its connection. aiohttp does not cancel a handler when that happens
    (unless the server is built with `handler_cancellation`), so a stream or long poll asks,
    or it would hold its slot until it next writes or its wait ends."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _sse(kind: str, revision: int, data: dict[str, object]) -> bytes:
    return f"id: {revision}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def metrics(request: web.Request) -> web.Response:
    render = request.app[STATE].render_metrics
    if render is None:
        return error(404, "metrics are not enabled")
    body, content_type = render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def openapi_document() -> dict[str, Any]:
    text = resources.files("sidecar.api").joinpath("openapi.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@functools.cache
def _openapi_json() -> str:
    """The schema as served: it cannot change while the process runs, so it is built once."""
    return json.dumps(openapi_document())


async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=_openapi_json(), content_type="application/json")


def create_app(
    agent: Agent,
    *,
    inventory: Inventory | None = None,
    render_metrics: Callable[[], tuple[bytes, str]] | None = None,
    token: str | None = None,
    max_streams: int = MAX_STREAMS,
) -> web.Application:
    """The API of `agent`. `token` defaults to `http.token`; the daemon passes the generated
    one when none is configured (`sidecar.api_token`). At most `max_streams` event streams
    and long polls are open at once (`sidecar.api.streams`)."""
    app = web.Application(
        middlewares=[json_errors, named_as_ourselves], client_max_size=MAX_BODY_BYTES
    )
    token = token if token is not None else agent.config.http.token
    app[STATE] = ApiState(agent, inventory, render_metrics, token, streams=StreamSlots(max_streams))

    async def stop_streams(app: web.Application) -> None:
        app[STATE].agent.events.end_subscriptions()

    app.on_shutdown.append(stop_streams)
    routes = [
        ("GET", "/health", health),
        ("GET", "/ready", ready),
        ("GET", "/status", orchestrator),
        ("GET", "/v1/status", status),
        ("GET", "/v1/members", members),
        ("GET", "/v1/members/{node_id}", member),
        ("GET", "/v1/leader", leader),
        ("GET", "/v1/fence", fence),
        ("GET", "/v1/events", events),
        ("GET", "/v1/history", history),
        ("POST", "/v1/leader/resign", resign),
        ("POST", "/v1/leader/switchover", switchover),
        ("GET", "/metrics", metrics),
        ("GET", "/openapi.json", openapi),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app
