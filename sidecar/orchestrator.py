"""Is the local orchestrator itself up? Checked here, published in our member record.

A live sidecar only proves the sidecar is alive. The old gossip layer's worst failure was nodes
disagreeing about who was alive; publishing the orchestrator's own health check next to the
lease lets every node read the same answer from etcd instead of probing each other across
NATs.

The check is the orchestrator's HTTP health URL: any 2xx is healthy. One failed probe is not
enough to call it down (`failures_before_unhealthy`, default 2), so a single slow answer does
not make the record flap; one success brings it back. Only a change of state is published,
never each probe, so a steady node costs etcd nothing extra.

    watch = OrchestratorWatch(url, interval_s=5, failures_before_unhealthy=2, publish=put)
    await watch.run()  # calls `publish(OrchestratorHealth(...))` on every change of state
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import datetime

import aiohttp

from sidecar.compat import UTC
from sidecar.records import OrchestratorHealth

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


async def probe(session: aiohttp.ClientSession, url: str, timeout_s: float) -> tuple[bool, str]:
    """One GET of the health URL: (healthy, what was seen)."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as response:
            return 200 <= response.status < 300, f"HTTP {response.status}"
    except asyncio.TimeoutError:
        return False, f"no answer within {timeout_s:g} s"
    except aiohttp.ClientConnectorError as e:
        errno = e.os_error.errno  # asyncio's own text is "connect call failed (...)"
        return False, (os.strerror(errno) if errno else str(e.os_error) or "cannot connect").lower()
    except aiohttp.ClientError as e:
        return False, str(e).splitlines()[0][:120] if str(e) else type(e).__name__


class OrchestratorWatch:
    """Probes every `interval_s` and calls `publish` when the state changes (and once at first)."""

    def __init__(
        self,
        url: str,
        *,
        interval_s: float,
        failures_before_unhealthy: int,
        publish: Callable[[OrchestratorHealth], Awaitable[bool]],
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.failures_before_unhealthy = failures_before_unhealthy
        self.publish = publish
        self.current: OrchestratorHealth | None = None
        self._failures = 0
        self._failing_since: datetime | None = None  # the first failed probe of this run
        self._unpublished = False

    async def run(self) -> None:
        """Probe forever. A state `publish` could not write (it returned False) is offered
        again after every later probe until it lands."""
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._check(session)
                except Exception:  # a bug here must not silently freeze the published state
                    log.exception("orchestrator health check failed unexpectedly; retrying")
                await asyncio.sleep(self.interval_s)

    async def _check(self, session: aiohttp.ClientSession) -> None:
        healthy, detail = await probe(session, self.url, min(PROBE_TIMEOUT_S, self.interval_s))
        if self.observe(healthy, detail) is not None:
            self._unpublished = True
        if self._unpublished and self.current is not None:
            self._unpublished = not await self.publish(self.current)

    def observe(self, healthy: bool, detail: str) -> OrchestratorHealth | None:
        """Fold one probe result in; the new state when it changed, else None.

        >>> watch = OrchestratorWatch("http://x", interval_s=1, failures_before_unhealthy=2,
        ...                           publish=None)  # type: ignore[arg-type]
        >>> watch.observe(True, "HTTP 200").healthy
        True
        >>> watch.observe(False, "HTTP 503") is None  # one failure is not enough
        True
        >>> watch.observe(False, "HTTP 503").detail
        'HTTP 503'
        """
        now = datetime.now(UTC)
        self._failures = 0 if healthy else self._failures + 1
        if self._failures == 1:
            self._failing_since = now
        was = self.current.healthy if self.current is not None else None
        if healthy == was:
            return None
        if was is True and self._failures < self.failures_before_unhealthy:
            return None
        # Down since its first failed probe: "down for 15 s" counts the checks it failed.
        began = now if healthy or self._failing_since is None else self._failing_since
        self.current = OrchestratorHealth(
            healthy=healthy,
            detail=detail,
            since=began.isoformat(timespec="seconds"),
        )
        log.log(
            logging.INFO if healthy else logging.WARNING,
            "orchestrator is %s (%s, %s)",
            "healthy" if healthy else "NOT healthy",
            detail,
            self.url,
            extra={"event": "orchestrator_health", "healthy": healthy},
        )
        return self.current
