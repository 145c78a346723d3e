"""Accepting connections for the local API without letting slow or many clients starve it.

Measured before: 1,100 clients sending one header byte a second, with the usual limit of 1,024
descriptors, kept `/health` from answering for the whole 45 s they ran, and asyncio logged a
traceback for each failed accept (256,055 of them, 114 MB). So each connection must finish its
request head within `header_timeout_s` or is closed; at most `max_connections` are open at
once, well under the descriptor limit, so etcd's connections always find one: a newcomer over
the cap takes the place of the oldest connection still waiting for its head (a slow client),
and is refused only when every open one is busy with a complete request. Accept errors are
logged at most once a second, with a count.

Requests aiohttp cannot parse (a head over 8 KB, a malformed request line) never reach the
application's middlewares: aiohttp answers them itself, in plain text, and logs a traceback for
each. `JsonErrorsHandler` answers them in JSON like every other error, with one log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256
_HEAD_END = b"\r\n\r\n"
_MAX_HEAD_BYTES = 16 * 1024  # aiohttp refuses longer heads itself; we only look for their end


class Limits:
    """The limits, and what they did (for logs and tests). Connections report to it:
    `admit` when they open, `head_done` once their request head is in, `release` at the end."""

    def __init__(
        self, max_connections: int = MAX_CONNECTIONS, header_timeout_s: float = HEADER_TIMEOUT_S
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.active = 0
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._waiting: dict[GuardedProtocol, None] = {}  # no request head yet, oldest first

    def admit(self, connection: GuardedProtocol) -> bool:
        """Whether `connection` may be served; over the cap, the oldest one still waiting for
        its head is closed to make room, and without one the newcomer is refused."""
        if self.active >= self.max_connections:
            if not self._waiting:
                self.refused += 1
                return False
            self.evicted += 1
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]  # evicted once: the next newcomer takes another one
            oldest.close()
        self.active += 1
        self._waiting[connection] = None
        return True

    def head_done(self, connection: GuardedProtocol, *, late: bool = False) -> None:
        """`connection` sent its request head (or, `late`, ran out of time to)."""
        self._waiting.pop(connection, None)
        if late:
            self.timed_out += 1

    def release(self, connection: GuardedProtocol) -> None:
        self._waiting.pop(connection, None)
        self.active -= 1


class GuardedProtocol(asyncio.Protocol):
    """Wraps one aiohttp connection: refused when too many are open, closed when its request
    head does not arrive in time; otherwise every call goes through to aiohttp unchanged."""

    def __init__(self, inner: asyncio.Protocol, limits: Limits) -> None:
        self.inner = inner
        self.limits = limits
        self.transport: asyncio.BaseTransport | None = None
        self.admitted = False
        self.head = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if not self.limits.admit(self):
            transport.close()
            return
        self.admitted = True
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.limits.header_timeout_s, self._too_slow)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        if self.timer is not None:
            self.head = (self.head + data)[-_MAX_HEAD_BYTES:]
            if _HEAD_END in self.head:
                self._stop_timer()
                self.limits.head_done(self)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self._stop_timer()
        self.limits.release(self)
        self.inner.connection_lost(exc)

    def _too_slow(self) -> None:
        """The request head is not complete in time: a slow client, or one that never sends."""
        self.limits.head_done(self, late=True)
        self.close()

    def close(self) -> None:
        """Close the connection (aiohttp then hears of it through `connection_lost`)."""
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.head = b""


class JsonErrorsHandler(web.RequestHandler):
    """aiohttp's connection handler, answering the requests it cannot parse in JSON."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's own: too late for another answer
            raise ConnectionError("the response was already sent, cannot send an error")
        try:
            phrase = HTTPStatus(status).phrase.lower()
        except ValueError:
            phrase = "error"
        reason = f"{phrase}: {exc}" if status < 500 and exc is not None else phrase
        log.info("local API: refused a request from %s (%d %s)", request.remote, status, phrase)
        response = web.Response(
            status=status, text=json.dumps({"error": reason}), content_type="application/json"
        )
        response.force_close()
        return response


def json_errors_factory(server: web.Server) -> Callable[[], JsonErrorsHandler]:
    """A protocol factory like `server` itself, whose connections answer errors in JSON.
    No access log, as the daemon's runner has none (aiohttp documents None for that, though
    its annotation says Logger)."""
    options: dict[str, Any] = {"access_log": None}
    return lambda: JsonErrorsHandler(server, loop=asyncio.get_running_loop(), **options)


def guarded(
    factory: Callable[[], asyncio.Protocol], limits: Limits
) -> Callable[[], GuardedProtocol]:
    """A protocol factory for `loop.create_server` that applies `limits` to `factory`'s."""
    return lambda: GuardedProtocol(factory(), limits)


class AcceptErrors:
    """An event loop exception handler that logs failed accepts (no descriptor left) at most
    once a second, with how many there were, and passes everything else on."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.suppressed = 0
        self._logged_at = 0.0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "accept" not in message:
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self._logged_at < self.interval_s:
            self.suppressed += 1
            return
        self._logged_at = now
        error = context.get("exception")
        log.error(
            "local API: cannot accept connections (%s); %d more like it since the last report",
            error or message,
            self.suppressed,
            extra={"event": "accept_failed"},
        )
        self.suppressed = 0
