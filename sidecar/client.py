"""The orchestrator's side of the local API, asyncio: readiness, the leader, the fence, the
event stream, and `run_while_leading`, for leader-only work.

The orchestrator's leader-only work must stop the moment this node stops leading, and must
carry the epoch it was started under, so that what it writes can be fenced (`docs/
orchestrator.md`). Like kazoo's `Election.run` or Curator's `LeaderLatch`, `run_while_leading`
waits until this node leads, starts the work with the epoch, and cancels it as soon as the
sidecar's fence for that epoch fails: at the latest one poll after the sidecar stopped
claiming, and always before the validity the sidecar reported runs out.

    async with RingsideClient("http://127.0.0.1:8776") as ringside:
        async def schedule(epoch: int) -> None:
            while True:
                await ringside.fence(epoch)          # FenceLost when not leading any more
                await assign_jobs(epoch=epoch)       # pass it along: writers check it
                await asyncio.sleep(5)

        await run_while_leading(ringside, schedule)  # forever: lead, work, lose, wait, lead...

A reader of `/v1/events` keeps its place: `events()` resumes from the last revision it saw
after the connection breaks, so a sidecar restart loses nothing it still remembers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from sidecar.asyncio_compat import timeout
from sidecar.events import ClusterEvent

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a follower asks whether it leads, and a leader checks its fence


class FenceLost(Exception):
    """This node does not lead at the epoch asked about (any more): stop leader-only work."""


class SidecarUnavailable(Exception):
    """The sidecar did not answer, or answered something that is not its API."""


@dataclass(frozen=True)
class Lead:
    """`GET /v1/leader` as far as the orchestrator needs it."""

    leader: str | None
    epoch: int | None
    is_self: bool
    valid_for_s: float | None


class RingsideClient:
    """The local sidecar's API, for the orchestrator (asyncio; one aiohttp session)."""

    def __init__(self, base_url: str = "http://127.0.0.1:8776", *, timeout_s: float = 2.0):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RingsideClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ready(self) -> tuple[bool, str]:
        """Whether the sidecar is ready (`/ready`), and why not."""
        status, document = await self._get("/ready")
        return status == 200, str(document.get("reason") or "")

    async def leader(self) -> Lead:
        _, document = await self._get("/v1/leader")
        return Lead(
            leader=_typed(document.get("leader"), str),
            epoch=_typed(document.get("epoch"), int),
            is_self=document.get("is_self") is True,
            valid_for_s=_number(document.get("valid_for_s")),
        )

    async def fence(self, epoch: int) -> float:
        """Seconds this node may still act as leader at `epoch`; `FenceLost` when it may not."""
        status, document = await self._get(f"/v1/fence?epoch={int(epoch)}")
        if status == 409:
            raise FenceLost(str(document.get("error") or "not the leader at that epoch"))
        valid_for = _number(document.get("valid_for_s"))
        if status != 200 or valid_for is None:
            raise SidecarUnavailable(f"/v1/fence answered HTTP {status}")
        return valid_for

    async def events(self, since: int = 0) -> AsyncIterator[ClusterEvent]:
        """Every cluster event after revision `since`, forever; after a broken connection it
        resumes from the last revision seen (the sidecar replays what it still remembers)."""
        last = since
        while True:
            try:
                async for event in self._stream(last):
                    last = max(last, event.revision)
                    yield event
            except (aiohttp.ClientError, asyncio.TimeoutError, SidecarUnavailable) as e:
                log.info("event stream broken (%s); resuming after revision %d", e, last)
            await asyncio.sleep(POLL_S)

    async def _stream(self, since: int) -> AsyncIterator[ClusterEvent]:
        session = self._client()
        url = f"{self.base_url}/v1/events?since={max(since, 0)}"
        limits = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=60)
        async with session.get(url, timeout=limits) as response:
            if response.status != 200:
                raise SidecarUnavailable(f"/v1/events answered HTTP {response.status}")
            data: list[str] = []
            async for raw in response.content:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and data:
                    event = _event("\n".join(data))
                    data = []
                    if event is not None:
                        yield event

    async def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            async with self._client().get(self.base_url + path) as response:
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            raise SidecarUnavailable(f"the sidecar at {self.base_url} did not answer: {e}") from e
        if not isinstance(document, dict):
            raise SidecarUnavailable(f"{path} answered something that is not an object")
        return response.status, document

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session


async def run_while_leading(
    client: RingsideClient,
    work: Callable[[int], Coroutine[Any, Any, None]],
    *,
    poll_s: float = POLL_S,
    once: bool = False,
) -> None:
    """Run `work(epoch)` whenever this node leads; cancel it the moment it stops leading.

    Waits (polling `/v1/leader`) until this node leads, starts `work` with the epoch, then
    checks the fence for that epoch every `poll_s` (sooner when the reported validity is
    shorter) and cancels `work` when the fence fails or the sidecar stops answering for as long
    as the last validity it gave. Then it waits to lead again: a new leadership is a new
    epoch and a new call. With `once`, returns after the first leadership ends. If `work`
    returns or raises on its own, that leadership's work is over; an exception propagates.
    """
    while True:
        epoch = await _until_leading(client, poll_s)
        task = asyncio.create_task(work(epoch), name=f"leader-work-{epoch}")
        try:
            await _guard(client, epoch, task, poll_s)
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if once:
            return


async def _until_leading(client: RingsideClient, poll_s: float) -> int:
    while True:
        with contextlib.suppress(SidecarUnavailable):
            now = await client.leader()
            if now.is_self and now.epoch is not None:
                return now.epoch
        await asyncio.sleep(poll_s)


async def _guard(
    client: RingsideClient, epoch: int, task: asyncio.Task[None], poll_s: float
) -> None:
    """Return when `task` must stop (or has ended): the fence failed, or the validity last
    promised ran out without the sidecar confirming it."""
    loop = asyncio.get_running_loop()
    valid_until = loop.time() + poll_s  # until the first fence answer, one poll of trust
    while not task.done():
        sent = loop.time()
        try:  # never wait on an answer past the validity we hold: a silent sidecar ends it
            async with timeout(max(0.01, valid_until - sent)):
                valid_for = await client.fence(epoch)
        except FenceLost:
            return
        except (SidecarUnavailable, asyncio.TimeoutError):
            if loop.time() >= valid_until:
                return  # no word past the promise: we cannot know we still lead
        else:
            valid_until = sent + valid_for  # counted from the asking, not the answer
        wait = max(0.0, min(poll_s, valid_until - loop.time()))
        await asyncio.wait({task}, timeout=wait)


def _event(data: str) -> ClusterEvent | None:
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("kind"), str):
        return None
    revision = document.get("revision")
    detail = document.get("detail")
    at = _number(document.get("at"))
    if not isinstance(revision, int) or not isinstance(detail, dict):
        return None
    return ClusterEvent(document["kind"], revision, detail, at if at is not None else 0.0)


def _typed(value: object, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
