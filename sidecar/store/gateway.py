"""Transport to etcd's v3 JSON gateway: several endpoints, one deadline per request, TLS, auth.

etcd serves its gRPC API as JSON under `/v3/` on every client port. This module knows how to
reach it and nothing about what the calls mean (that is `sidecar.store.etcd`):

- each request goes to the endpoint that answered last; on a timeout, a refused connection,
  or an etcd answer that says "this member cannot serve you now" (no leader, request timed
  out), it moves on to the next endpoint, until every endpoint was tried once or the
  call's budget is spent. One attempt waits at most `request_timeout`; the whole call at
  most `call_timeout` (and never past an enclosing `sidecar.deadline.within` block), so
  the number of endpoints never stretches a call past the lease;
- every endpoint's reachability is recorded as a side effect, so health reporting needs no
  extra requests;
- with a username, an auth token is fetched on first use, renewed every `token_renew_s`
  (before etcd's default token TTL of five minutes, so no request has to fail for it), and
  fetched again at once when etcd says it is no longer valid (a member restarted: simple
  tokens live in its memory);
- etcd's errors become `sidecar.store.errors` exceptions here; no aiohttp exception leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from sidecar.asyncio_compat import timeout
from sidecar.deadline import Deadline, enclosing
from sidecar.store.codec import JsonObject
from sidecar.store.errors import (
    AuthFailed,
    Compacted,
    FutureRevision,
    InvalidRequest,
    ProtocolError,
    StoreError,
    StoreUnavailable,
)
from sidecar.store.lines import LineReader, describe_error
from sidecar.store.model import EndpointState

# gRPC status codes that mean "this member cannot serve the request now": try the next one.
_RETRY_ELSEWHERE = {1, 2, 4, 13, 14}  # cancelled, unknown, deadline exceeded, internal, unavailable
_UNAUTHENTICATED = 16
_PERMISSION_DENIED = 7
_NOT_FOUND = 5
TOKEN_RENEW_S = 240.0  # etcd's --auth-token-ttl defaults to 300 s


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS to etcd: the CA that signed the members' certificates, and
    optionally a client certificate and key for etcd's `--client-cert-auth`."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        if self.cert is not None:
            ctx.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
        return ctx


_AUTH_OFF = "authentication is not enabled"


def _login_needed(error: EtcdApiError) -> bool:
    """etcd refused a request for its token: expired or invalidated by a restart
    (UNAUTHENTICATED), or missing because auth was off when we last looked."""
    return error.code == _UNAUTHENTICATED or "user name is empty" in error.message


class EtcdApiError(StoreError):
    """etcd understood the request and refused it; `code` is the gRPC status code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _EndpointFailed(Exception):
    """This endpoint could not serve the request; the caller tries the next one."""


def translate(code: int, message: str) -> StoreError:
    """Map an etcd error answer to the store's exception for it."""
    if "compacted" in message:
        return Compacted(message, 0)
    if "future revision" in message:
        return FutureRevision(message)
    auth_words = ("authentication failed", "user name is empty", "permission denied")
    if code in (_UNAUTHENTICATED, _PERMISSION_DENIED) or any(w in message for w in auth_words):
        return AuthFailed(message)
    if code == _NOT_FOUND:
        return EtcdApiError(code, message)  # the caller knows which lease was meant
    return InvalidRequest(message)


class EtcdGateway:
    """HTTP client for a list of etcd endpoints. Create and use it inside one event loop."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        request_timeout: float = 1.5,
        call_timeout: float | None = None,
        tls: TlsFiles | None = None,
        username: str | None = None,
        password: str | None = None,
        token_renew_s: float = TOKEN_RENEW_S,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        self.endpoints = tuple(url.rstrip("/") for url in endpoints)
        self.request_timeout = request_timeout
        self.call_timeout = call_timeout or request_timeout * len(self.endpoints)
        self._ssl: ssl.SSLContext | bool = tls.context() if tls else True
        self._credentials = (username, password or "") if username else None
        self._token: str | None = None
        self._token_at = 0.0  # time.monotonic() of the last login
        self.token_renew_s = token_renew_s
        self.logins = 0  # tokens fetched so far (tests and diagnostics)
        self._preferred = 0
        self._states = {url: EndpointState(url) for url in self.endpoints}
        self._session: aiohttp.ClientSession | None = None

    # --- public --------------------------------------------------------------------------

    async def call(self, path: str, body: JsonObject, *, hedge: int = 1) -> JsonObject:
        """POST `body` to `path` on the first endpoint that serves it; raise otherwise.

        The whole call, all endpoints included, ends within `call_timeout`, or by the
        enclosing deadline when that comes first. With `hedge` > 1 the first `hedge`
        endpoints are asked at once and the first answer wins, so one slow or paused member
        costs nothing (keepalives and proofs of life: requests that may be applied twice).
        """
        deadline = Deadline(self.call_timeout).earlier(enclosing())
        failures: list[str] = []
        rotation = self._rotation()
        if hedge > 1 and len(rotation) > 1:
            first, rotation = rotation[:hedge], rotation[hedge:]
            answer = await self._first_answer(first, path, body, deadline, failures)
            if answer is not None:
                return answer
        for endpoint in rotation:
            if deadline.expired:
                break
            try:
                answer = await self._post(endpoint, path, body, deadline)
            except _EndpointFailed as e:
                failures.append(f"{endpoint}: {e}")
                continue
            # Only requests that may fail over move the preference; a health probe that
            # reached a member without quorum must not make it our first choice.
            self._preferred = self.endpoints.index(endpoint)
            return answer
        raise StoreUnavailable("no etcd endpoint answered: " + "; ".join(failures or ["timed out"]))

    async def _first_answer(
        self,
        endpoints: list[str],
        path: str,
        body: JsonObject,
        deadline: Deadline,
        failures: list[str],
    ) -> JsonObject | None:
        """The first answer of `endpoints`, asked at once; None when every one failed (each
        failure noted). An error etcd answered (a refused compare's peer: lease not found,
        permission denied) is an answer, raised as the first such one came."""
        asks = {
            asyncio.ensure_future(self._post(endpoint, path, body, deadline)): endpoint
            for endpoint in endpoints
        }
        try:
            pending = set(asks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if isinstance(error, _EndpointFailed):
                        failures.append(f"{asks[task]}: {error}")
                        continue
                    if error is None:
                        self._preferred = self.endpoints.index(asks[task])
                    return task.result()
            return None
        finally:
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)

    async def call_endpoint(self, endpoint: str, path: str, body: JsonObject) -> JsonObject:
        """POST to exactly `endpoint`, without failing over (health checks use this)."""
        deadline = Deadline(self.request_timeout).earlier(enclosing())
        try:
            return await self._post(endpoint.rstrip("/"), path, body, deadline)
        except _EndpointFailed as e:
            raise StoreUnavailable(f"{endpoint}: {e}") from None

    @asynccontextmanager
    async def stream(self, path: str, body: JsonObject) -> AsyncIterator[tuple[str, LineReader]]:
        """Open a streamed POST (a watch) on the first endpoint that accepts it.

        Yields the endpoint and a reader of the JSON objects it sends, one per line. The
        connection closes when the block ends.
        """
        failures: list[str] = []
        for endpoint in self._rotation():
            try:
                response = await self._open(endpoint, path, body)
            except _EndpointFailed as e:
                failures.append(f"{endpoint}: {e}")
                continue
            reader = LineReader(response)
            try:
                yield endpoint, reader
            finally:
                reader.cancel()
                response.close()
            return
        raise StoreUnavailable("no etcd endpoint accepted the watch: " + "; ".join(failures))

    def mark_failed(self, endpoint: str, reason: str) -> None:
        """Record that `endpoint` failed outside a request (e.g. a watch went silent)."""
        self._record(endpoint, ok=False, error=reason)
        if self.endpoints[self._preferred] == endpoint:
            self._preferred = (self._preferred + 1) % len(self.endpoints)

    def forget_token(self) -> None:
        """Drop the auth token (etcd said it is invalid); the next request logs in again."""
        self._token = None

    def states(self) -> tuple[EndpointState, ...]:
        return tuple(self._states[url] for url in self.endpoints)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- mechanics -----------------------------------------------------------------------

    def _rotation(self) -> list[str]:
        """Endpoints in the order to try: the last good one first."""
        n = len(self.endpoints)
        return [self.endpoints[(self._preferred + i) % n] for i in range(n)]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=0, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _login_due(self) -> bool:
        """Whether to log in before the next request: no token yet, or one due for renewal.
        The empty token (auth was off) is not renewed: the first refusal logs in."""
        if not self._credentials:
            return False
        if self._token is None:
            return True
        return bool(self._token) and time.monotonic() - self._token_at >= self.token_renew_s

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    async def _post(
        self, endpoint: str, path: str, body: JsonObject, deadline: Deadline
    ) -> JsonObject:
        retried_auth = False
        while True:
            if self._login_due():
                await self._authenticate(endpoint, deadline)
            try:
                return await self._post_once(endpoint, path, body, deadline)
            except EtcdApiError as e:
                if self._credentials and not retried_auth and _login_needed(e):
                    self._token, retried_auth = None, True
                    continue
                raise translate(e.code, e.message) from None

    async def _authenticate(self, endpoint: str, deadline: Deadline) -> None:
        assert self._credentials is not None
        name, password = self._credentials
        try:
            answer = await self._post_once(
                endpoint, "/v3/auth/authenticate", {"name": name, "password": password}, deadline
            )
        except EtcdApiError as e:
            if _AUTH_OFF in e.message:
                # Credentials configured before the operator turns auth on (the live path in
                # etcd/OPERATIONS.md): go without a token; the first request refused for the
                # want of one logs in.
                self._token = ""
                return
            raise AuthFailed(f"etcd refused user {name!r}: {e.message}") from None
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError(f"{endpoint} answered authenticate without a token")
        self._token, self._token_at = token, time.monotonic()
        self.logins += 1

    async def _post_once(
        self, endpoint: str, path: str, body: JsonObject, deadline: Deadline
    ) -> JsonObject:
        with contextlib.suppress(aiohttp.ServerDisconnectedError):
            return await self._exchange(endpoint, path, body, deadline)
        # A pooled keep-alive connection the member closed while idle (it restarted, or
        # dropped idle clients). Nothing was answered on it; one fresh attempt is fair.
        try:
            return await self._exchange(endpoint, path, body, deadline)
        except aiohttp.ServerDisconnectedError:
            raise self._fail(endpoint, "server disconnected") from None

    async def _exchange(
        self, endpoint: str, path: str, body: JsonObject, deadline: Deadline
    ) -> JsonObject:
        """One HTTP request and its decoded answer; `ServerDisconnectedError` passes through."""
        started = time.monotonic()
        limits = aiohttp.ClientTimeout(
            total=max(0.001, min(self.request_timeout, deadline.remaining()))
        )
        try:
            async with self._client().post(
                endpoint + path, json=body, headers=self._headers(), timeout=limits
            ) as response:
                raw = await response.read()
                status = response.status
        except aiohttp.ServerDisconnectedError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise self._fail(endpoint, describe_error(e)) from None
        answer = self._decode(endpoint, status, raw)
        self._record(endpoint, ok=True, latency=time.monotonic() - started)
        return answer

    def _decode(self, endpoint: str, status: int, raw: bytes) -> JsonObject:
        """Turn an answer into JSON, an `EtcdApiError`, or an endpoint failure."""
        try:
            answer = json.loads(raw)
        except ValueError:
            raise self._fail(endpoint, f"HTTP {status}, not etcd JSON: {raw[:60]!r}") from None
        if not isinstance(answer, dict):
            raise ProtocolError(f"{endpoint} answered {type(answer).__name__}, not an object")
        if status == 200 and "error" not in answer:
            return answer
        code = answer.get("code")
        message = str(answer.get("message") or answer.get("error") or f"HTTP {status}")
        if not isinstance(code, int) or code in _RETRY_ELSEWHERE:
            raise self._fail(endpoint, message)
        self._record(endpoint, ok=True)  # a refusal is an answer: the endpoint is fine
        raise EtcdApiError(code, message)

    async def _open(self, endpoint: str, path: str, body: JsonObject) -> aiohttp.ClientResponse:
        """Start a streamed POST; only connecting and the response head are time-limited."""
        if self._login_due():
            await self._authenticate(endpoint, Deadline(self.request_timeout))
        limits = aiohttp.ClientTimeout(
            total=None, connect=self.request_timeout, sock_connect=self.request_timeout
        )
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can drop a cancel (CPython gh-86296).
            async with timeout(self.request_timeout):
                response = await self._client().post(
                    endpoint + path, json=body, headers=self._headers(), timeout=limits
                )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise self._fail(endpoint, describe_error(e)) from None
        if response.status != 200:
            raw = await response.read()
            response.release()
            try:
                self._decode(endpoint, response.status, raw)
            except EtcdApiError as e:
                raise translate(e.code, e.message) from None
            raise _EndpointFailed(f"HTTP {response.status}")
        self._record(endpoint, ok=True)
        return response

    def _fail(self, endpoint: str, reason: str) -> _EndpointFailed:
        """Record `endpoint` as failed for `reason`; the exception to raise for it."""
        self._record(endpoint, ok=False, error=reason)
        return _EndpointFailed(reason)

    def _record(
        self, endpoint: str, *, ok: bool, error: str | None = None, latency: float | None = None
    ) -> None:
        state = self._states.get(endpoint)
        if state is None:  # a member's URL that is not configured: health checks only
            return
        if ok:
            self._states[endpoint] = replace(
                state,
                reachable=True,
                last_error=None,
                last_ok=time.monotonic(),
                last_latency_s=latency if latency is not None else state.last_latency_s,
            )
        else:
            self._states[endpoint] = replace(
                state, reachable=False, last_error=error, failures=state.failures + 1
            )
