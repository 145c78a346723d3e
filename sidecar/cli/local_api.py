"""A client for the local sidecar API, on the standard library only (`ringside status` must
start fast, so no aiohttp here).

Every failure reaches the caller as a `NoAnswer` subclass with one plain sentence:
`SidecarUnreachable` (nothing listens, the connection broke, it took too long) or `BadAnswer`
(not JSON, the wrong shape, an unexpected HTTP status). Expected refusals are answers, not
errors: `ready()` returns False on 503, `resign()` returns the 409/403/401 it got.

    client = SidecarClient("http://127.0.0.1:8776")
    report = client.status()
    for event in client.events(since=report.revision):
        ...
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from sidecar.cli.reports import (
    LeaderReport,
    MemberInfo,
    NoAnswer,
    ShapeError,
    StatusReport,
    parse_event,
    parse_leader,
    parse_member,
    parse_members,
    parse_status,
)
from sidecar.events import ClusterEvent

DEFAULT_TIMEOUT_S = 3.0
READY_WAIT_CHUNK_S = 60.0  # one /ready?wait= at a time (the sidecar caps a wait at 300 s)
Parsed = TypeVar("Parsed")


class SidecarUnreachable(NoAnswer):
    """Nothing answered at the sidecar's address, or the answer broke off."""


class BadAnswer(NoAnswer):
    """The sidecar answered, but not with the document the API promises."""


@dataclass(frozen=True)
class Answer:
    """An HTTP status and its JSON object."""

    status: int
    document: dict[str, Any]

    @property
    def error(self) -> str:
        return str(self.document.get("error") or f"HTTP {self.status}")


def sidecar_url(listen: str) -> str:
    """The URL to reach a sidecar listening on `listen` (``host:port``) from this host.

    >>> sidecar_url("0.0.0.0:8776"), sidecar_url("[::]:8776"), sidecar_url("[::1]:9000")
    ('http://127.0.0.1:8776', 'http://[::1]:8776', 'http://[::1]:9000')
    """
    host, _, port = listen.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(host, host)
    return f"http://{host}:{port}"


class SidecarClient:
    """Synchronous calls to one sidecar's API at `base_url`.

    `token` goes with mutating requests as ``Authorization: Bearer <token>``. Proxy
    variables in the environment are ignored: the sidecar is local.
    """

    def __init__(
        self, base_url: str, *, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # --- the API ---------------------------------------------------------------------------

    def status(self) -> StatusReport:
        return self._parse("/v1/status", self._get("/v1/status"), parse_status)

    def members(self) -> tuple[MemberInfo, ...]:
        return self._parse("/v1/members", self._get("/v1/members"), parse_members)

    def member(self, node_id: str) -> MemberInfo | None:
        """One member, or None when the sidecar knows no such member (404)."""
        path = "/v1/members/" + urllib.parse.quote(node_id, safe="")
        answer = self._call("GET", path, accept=(200, 404))
        if answer.status == 404:
            return None
        return self._parse(path, answer.document, parse_member)

    def leader(self) -> LeaderReport:
        return self._parse("/v1/leader", self._get("/v1/leader"), parse_leader)

    def fence(self, epoch: int) -> float | None:
        """Seconds this node may still act as leader at `epoch`, or None when it may not (the
        synchronous twin of `sidecar.client.RingsideClient.fence`, for leader-only work)."""
        path = f"/v1/fence?epoch={int(epoch)}"
        answer = self._call("GET", path, accept=(200, 409))
        valid_for = answer.document.get("valid_for_s")
        if answer.status != 200 or not isinstance(valid_for, int | float):
            return None
        return float(valid_for)

    def ready(self, wait_s: float = 0.0) -> tuple[bool, str]:
        """Whether the sidecar is ready, waiting up to `wait_s` for it; and why not."""
        path = f"/ready?wait={wait_s:g}" if wait_s > 0 else "/ready"
        answer = self._call("GET", path, accept=(200, 503), timeout_s=wait_s + self.timeout_s)
        ready = answer.document.get("ready")
        if not isinstance(ready, bool):
            raise BadAnswer(f"the sidecar at {self.base_url} answered {path} without 'ready'")
        return ready, str(answer.document.get("reason") or "")

    def wait_ready(self, within_s: float) -> tuple[bool, str]:
        """`ready()`, waiting up to `within_s`, also for a sidecar that is not listening yet
        (just started): `SidecarUnreachable` only if it still is not once the time is up."""
        deadline = time.monotonic() + within_s
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ready, reason = self.ready(min(remaining, READY_WAIT_CHUNK_S))
            except SidecarUnreachable:
                if remaining <= 0:
                    raise
                time.sleep(min(0.2, remaining))
                continue
            if ready or remaining <= READY_WAIT_CHUNK_S:
                return ready, reason

    def resign(self) -> Answer:
        """Ask this node to hand leadership over: 200, or 409 (not the leader), 403, 401."""
        return self._call("POST", "/v1/leader/resign", accept=(200, 401, 403, 409))

    def switchover(self, to: str | None, timeout_s: float) -> Answer:
        """Ask the leader to hand over (to `to`), the request withdrawn after `timeout_s`:
        202, or 409 (why not), 403, 401, 503."""
        query = {"timeout": f"{timeout_s:g}", **({"to": to} if to else {})}
        path = "/v1/leader/switchover?" + urllib.parse.urlencode(query)
        return self._call("POST", path, accept=(202, 400, 401, 403, 409, 503))

    def history(self, since: float, node: str | None) -> list[ClusterEvent]:
        """The cluster history recorded in etcd, through the sidecar (`/v1/history`)."""
        query = {"since": f"{since:.3f}", **({"node": node} if node else {})}
        path = "/v1/history?" + urllib.parse.urlencode(query)
        document = self._get(path)
        found = document.get("events")
        if not isinstance(found, list):
            raise BadAnswer(f"the sidecar at {self.base_url} answered {path} without events")
        return [self._parse(path, raw, parse_event) for raw in found]

    def events(self, since: int, *, idle_s: float = 40.0) -> Iterator[ClusterEvent]:
        """Follow `/v1/events` from after revision `since`.

        Ends (without error) when the sidecar closes the stream or sends nothing for `idle_s`;
        the caller then catches up from a fresh status and follows again.
        """
        path = f"/v1/events?since={max(since, 0)}"
        response = self._open("GET", path, idle_s)
        with response:
            if response.status != 200:
                self._raise_for(path, response)
            data: list[str] = []
            try:
                for raw in response:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif not line and data:
                        yield self._event(path, "\n".join(data))
                        data = []
            except TimeoutError:
                return
            except (OSError, http.client.HTTPException) as e:
                raise SidecarUnreachable(
                    f"the sidecar at {self.base_url} broke off its event stream: {e}"
                ) from e

    # --- plumbing --------------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, accept=(200,)).document

    def _call(
        self, method: str, path: str, *, accept: tuple[int, ...], timeout_s: float | None = None
    ) -> Answer:
        response = self._open(method, path, timeout_s or self.timeout_s)
        with response:
            if response.status not in accept:
                self._raise_for(path, response)
            body = self._read(path, response)
        return Answer(response.status, self._json(path, response.status, body))

    def _open(self, method: str, path: str, timeout_s: float) -> http.client.HTTPResponse:
        headers = {"Accept": "application/json"}
        if self.token and method != "GET":
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            request = urllib.request.Request(self.base_url + path, method=method, headers=headers)
            response: http.client.HTTPResponse = self._opener.open(request, timeout=timeout_s)
        except urllib.error.HTTPError as e:
            return e  # type: ignore[return-value]  # an HTTPError is the response itself
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            if isinstance(reason, TimeoutError):  # its text, "timed out", names neither
                reason = f"no answer to {method} {path} within {timeout_s:g} s"
            raise SidecarUnreachable(
                f"cannot reach the sidecar at {self.base_url}: {reason}"
            ) from e
        return response

    def _read(self, path: str, response: http.client.HTTPResponse) -> bytes:
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as e:
            raise SidecarUnreachable(
                f"the sidecar at {self.base_url} broke off its answer to {path}: {e}"
            ) from e

    def _json(self, path: str, status: int, body: bytes) -> dict[str, Any]:
        try:
            document = json.loads(body)
        except ValueError:
            excerpt = body[:60].decode("utf-8", errors="replace")
            raise BadAnswer(
                f"the sidecar at {self.base_url} answered {path} (HTTP {status}) with something "
                f"that is not JSON: {excerpt!r}"
            ) from None
        if not isinstance(document, dict):
            raise BadAnswer(
                f"the sidecar at {self.base_url} answered {path} with JSON that is not an object"
            )
        return document

    def _raise_for(self, path: str, response: http.client.HTTPResponse) -> None:
        body = self._read(path, response)
        try:
            detail = str(json.loads(body).get("error"))
        except (ValueError, AttributeError):
            detail = body[:60].decode("utf-8", errors="replace").strip()
        raise BadAnswer(
            f"the sidecar at {self.base_url} answered {path} with HTTP {response.status}: {detail}"
        )

    def _parse(self, path: str, document: object, parse: Callable[[object], Parsed]) -> Parsed:
        try:
            return parse(document)
        except ShapeError as e:
            raise BadAnswer(
                f"the sidecar at {self.base_url} answered {path} with a document of the wrong "
                f"shape: {e}"
            ) from None

    def _event(self, path: str, data: str) -> ClusterEvent:
        try:
            return self._parse(path, json.loads(data), parse_event)
        except ValueError:
            raise BadAnswer(
                f"the sidecar at {self.base_url} sent an event that is not JSON: {data[:60]!r}"
            ) from None
