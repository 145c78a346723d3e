"""HTTP to the sidecars' local APIs (loopback only), with every answer's status code seen.

`Prober.request` never raises: a sidecar that does not answer in time gives an `Answer` with
no status. Any 5xx, and any answer whose body is not a JSON object, is reported to the
campaign's findings at once (`ringside` answers errors as 4xx JSON; a 5xx is a crash in a
handler). `sent` and `received` are on the monotonic clock, the sidecars' own clock for
validity, so a claim answered between them is bounded on both sides.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from chaos.findings import Findings
from tests.fleet import Sidecar

POLL_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer within the timeout, or the connection failed
    body: dict[str, Any] | None
    sent: float
    received: float


class Prober:
    def __init__(self, findings: Findings) -> None:
        self.findings = findings
        self.requests = 0
        self.unanswered = 0
        self.server_errors = 0
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        sidecar: Sidecar,
        path: str,
        *,
        method: str = "GET",
        timeout_s: float = POLL_TIMEOUT_S,
    ) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self.requests += 1
        sent = time.monotonic()
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_s)
            headers = sidecar.auth_header() if method != "GET" else {}
            async with self._session.request(
                method, sidecar.url + path, timeout=timeout, headers=headers
            ) as r:
                text = await r.text(errors="replace")
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            self.unanswered += 1
            return Answer(None, None, sent, time.monotonic())
        received = time.monotonic()
        body = _json_object(text)
        # A 503 in the API's error shape is an answer ("not ready", "cannot vouch": decision
        # 0026), documented in the OpenAPI file; any other 5xx is a server error.
        refusal = status == 503 and body is not None and isinstance(body.get("error"), str)
        if status >= 500 and not refusal:
            self.server_errors += 1
            self.findings.violation(
                "server-error",
                sidecar.node_id,
                f"{method} {path} answered {status}: {text[:200]!r}",
                key=f"{method} {path} {status}",
                now=received,
            )
        elif body is None:
            self.findings.violation(
                "not-json",
                sidecar.node_id,
                f"{method} {path} answered {status} with a body that is not a JSON object: "
                f"{text[:200]!r}",
                key=f"{method} {path}",
                now=received,
            )
        return Answer(status, body, sent, received)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
