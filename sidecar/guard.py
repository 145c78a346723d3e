"""The etcd guard: a filter on a voter's public client port that passes only what a sidecar needs.

etcd before 3.5.28 checks no permission on its Alarm and Compact calls (CVE-2026-33413), and
while a NOSPACE alarm is raised it skips its auth checks on auth changes: measured on 3.4.23, a
node's own credentials raise NOSPACE, then turn auth off. RBAC cannot stop that; a filter in
front of etcd can (decision 0011). The guard terminates TLS on the public port (client
certificates required when a CA is given), forwards the JSON-gateway calls a sidecar makes to
etcd on loopback, streams the answers back (watches and keepalives are long POSTs), and refuses
everything else in etcd's own error shape, so a client sees "permission denied".

etcd checks no permission on lease keepalive and time-to-live either (measured on 3.4.23 and
3.5.1), so the guard lets a lease call through only for a caller whose token may write every
key on the lease (`sidecar.guard_leases`, decision 0024). Moving etcd's leader, which renews
every lease, is not among the calls a sidecar makes: it is refused like the rest.

    guard = Guard(upstream="http://127.0.0.1:22379")
    app = guard.app()   # serve it with aiohttp, on the voter's public address

The operator keeps root's reach through etcd's loopback port on the voter itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any, Final

import aiohttp
from aiohttp import web

from sidecar.guard_leases import LEASE_CALLS, Verdict, check, lease_id

log = logging.getLogger(__name__)

# The calls `sidecar.store.etcd` makes, except compaction: nothing else crosses.
ALLOWED: Final = frozenset(
    {
        "/v3/auth/authenticate",
        "/v3/cluster/member/list",
        "/v3/kv/deleterange",
        "/v3/kv/put",
        "/v3/kv/range",
        "/v3/kv/txn",
        "/v3/lease/grant",
        "/v3/lease/keepalive",
        "/v3/lease/revoke",
        "/v3/lease/timetolive",
        "/v3/maintenance/status",
        "/v3/watch",
    }
)
MAX_BODY_BYTES: Final = 64 * 1024  # a member record is capped at 16 KiB; a txn holds two
_PERMISSION_DENIED: Final = 7  # gRPC status codes, as etcd answers them
_INVALID_ARGUMENT: Final = 3
_UNAVAILABLE: Final = 14  # a client tries its next endpoint
PROBE_TIMEOUT_S: Final = 1.0  # under a sidecar's 1.5 s per request, so it can try another voter
_FORWARDED_HEADERS: Final = ("Authorization", "Content-Type")


def _refusal(status: int, message: str, code: int = _PERMISSION_DENIED) -> web.Response:
    """An answer in etcd's gateway error shape, so clients translate it as etcd's own."""
    body = {"error": message, "code": code, "message": message}
    return web.json_response(body, status=status)


def _answer(verdict: Verdict) -> web.Response:
    return web.json_response(verdict.body, status=verdict.status)


class Guard:
    """Forwards allowed calls to `upstream` (etcd's loopback client URL)."""

    def __init__(self, upstream: str, *, upstream_ssl: ssl.SSLContext | bool = True) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_ssl = upstream_ssl
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{path:.*}", self.handle)
        app.on_cleanup.append(self._close)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if request.method != "POST" or path not in ALLOWED:
            log.warning(
                "refused %s %s from %s", request.method, path[:80], request.remote,
                extra={"event": "guard_refused"},
            )  # fmt: skip
            return _refusal(403, f"etcdserver: permission denied (ringside guard: {path[:80]})")
        too_large = f"etcdserver: request is too large (ringside guard: over {MAX_BODY_BYTES} B)"
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _refusal(413, too_large, _INVALID_ARGUMENT)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refusal(413, too_large, _INVALID_ARGUMENT)
        headers = {h: request.headers[h] for h in _FORWARDED_HEADERS if h in request.headers}
        if path in LEASE_CALLS:
            refusal = await self._lease_refusal(request, body)
            if refusal is not None:
                return refusal
        try:
            upstream = await self._client().post(
                self.upstream + path, data=body, headers=headers, ssl=self.upstream_ssl
            )
        except aiohttp.ClientError as e:
            return web.json_response({"error": f"etcd unreachable: {e}"}, status=502)
        async with upstream:
            kind = upstream.headers.get("Content-Type", "application/json")
            response = web.StreamResponse(status=upstream.status, headers={"Content-Type": kind})
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (aiohttp.ClientError, ConnectionResetError):
                pass  # either side went away: the stream ends here
            return response

    async def _lease_refusal(self, request: web.Request, body: bytes) -> web.Response | None:
        """None when etcd would let this caller act on the lease; else the answer to send."""
        try:
            lease = lease_id(body)
        except ValueError as e:
            return _refusal(400, f"etcdserver: bad lease request (ringside guard: {e})",
                            _INVALID_ARGUMENT)  # fmt: skip
        try:
            verdict = await check(self._ask, lease, request.headers.get("Authorization"))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            message = f"etcdserver: ringside guard could not check lease {lease:x}: {e!r}"
            return _refusal(503, message[:200], _UNAVAILABLE)
        if verdict is None:
            return None
        log.warning(
            "refused %s of lease %x from %s: %s", request.path, lease, request.remote,
            str(verdict.body.get("message") or verdict.body.get("error"))[:120],
            extra={"event": "guard_refused"},
        )  # fmt: skip
        return _answer(verdict)

    async def _ask(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """One call to etcd for the guard's own checks: its status and JSON object."""
        limits = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
        async with self._client().post(
            self.upstream + path, json=body, headers=headers, ssl=self.upstream_ssl, timeout=limits
        ) as answer:
            parsed = json.loads(await answer.read())
            if not isinstance(parsed, dict):
                raise ValueError(f"etcd answered {path} with {type(parsed).__name__}")
            return answer.status, parsed

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
