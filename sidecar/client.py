"""The orchestrator's side of the local API, asyncio: readiness, the leader, the fence, the
event stream, and `run_while_leading`, for leader-only work.

The orchestrator's leader-only work must stop the moment this node stops leading, and must
carry the epoch it was started under, so that what it writes can be fenced (`docs/
orchestrator.md`). Like kazoo's `Election.run` or Curator's `LeaderLatch`, `run_while_leading`
waits until this node leads, starts the work with the epoch, and cancels it as soon as the
sidecar's fence for that epoch fails or the sidecar does not answer: at the latest one poll
after the sidecar stopped claiming, and always before the validity the sidecar reported runs
out (safety rule 22). It outlives its sidecar: a paused, crashed or garbled sidecar ends a
leadership, never the orchestrator's process; the loop waits for the sidecar and for this
node to lead again, and runs the work again.

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
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from sidecar.events import ClusterEvent

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often a follower asks whether it leads, and a leader checks its fence


class FenceLost(Exception):
    """This node does not lead at the epoch asked about (any more): stop leader-only work."""


class SidecarUnavailable(Exception):
    """The sidecar did not answer, or answered something that is not its API. The message
    names the request, what happened and after how long."""


@dataclass(frozen=True)
class Lead:
    """`GET /v1/leader` as far as the orchestrator needs it."""

    leader: str | None
    epoch: int | None
    is_self: bool
    valid_for_s: float | None


@dataclass(frozen=True)
class _Answer:
    """One JSON object the sidecar answered, and how to say what was wrong with it."""

    asked: str  # "GET /v1/fence?epoch=7 (sidecar http://127.0.0.1:8776)"
    status: int
    document: dict[str, Any]
    took_s: float

    def unexpected(self, what: str) -> SidecarUnavailable:
        return SidecarUnavailable(f"{self.asked}: {what} after {self.took_s:.1f} s")


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
        answer = await self._get("/ready")
        return answer.status == 200, str(answer.document.get("reason") or "")

    async def leader(self) -> Lead:
        document = (await self._get("/v1/leader")).document
        return Lead(
            leader=_typed(document.get("leader"), str),
            epoch=_typed(document.get("epoch"), int),
            is_self=document.get("is_self") is True,
            valid_for_s=_number(document.get("valid_for_s")),
        )

    async def fence(self, epoch: int) -> float:
        """Seconds this node may still act as leader at `epoch`; `FenceLost` when it may not,
        `SidecarUnavailable` when the sidecar cannot say."""
        answer = await self._get(f"/v1/fence?epoch={int(epoch)}")
        if answer.status == 409:
            raise FenceLost(str(answer.document.get("error") or "not the leader at that epoch"))
        valid_for = _number(answer.document.get("valid_for_s"))
        if answer.status != 200:
            error = answer.document.get("error")
            raise answer.unexpected(f"HTTP {answer.status}" + (f" ({error})" if error else ""))
        if valid_for is None:
            raise answer.unexpected("HTTP 200 without a number in valid_for_s")
        return valid_for

    async def events(self, since: int = 0) -> AsyncIterator[ClusterEvent]:
        """Every cluster event after revision `since`, forever; after a broken connection it
        resumes from the last revision seen (the sidecar replays what it still remembers)."""
        last = since
        while True:
            opened = time.monotonic()
            try:
                async for event in self._stream(last):
                    last = max(last, event.revision)
                    yield event
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                broken = _what_failed(e, time.monotonic() - opened)
                log.info("GET /v1/events (sidecar %s): %s", self.base_url, broken)
            except SidecarUnavailable as e:
                log.info("%s", e)
            log.info("resuming the event stream after revision %d", last)
            await asyncio.sleep(POLL_S)

    async def _stream(self, since: int) -> AsyncIterator[ClusterEvent]:
        session = self._client()
        path = f"/v1/events?since={max(since, 0)}"
        limits = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=60)
        async with session.get(self.base_url + path, timeout=limits) as response:
            if response.status != 200:
                raise SidecarUnavailable(
                    f"GET {path} (sidecar {self.base_url}): HTTP {response.status}"
                )
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

    async def _get(self, path: str) -> _Answer:
        asked = f"GET {path} (sidecar {self.base_url})"
        started = time.monotonic()
        try:
            async with self._client().get(self.base_url + path) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            happened = _what_failed(e, time.monotonic() - started)
            raise SidecarUnavailable(f"{asked}: {happened}") from e
        took_s = time.monotonic() - started
        try:
            document: object = json.loads(body)
        except ValueError:
            document, problem = {}, f"HTTP {status} with no JSON ({body[:40]!r})"
        else:
            problem = "" if isinstance(document, dict) else f"HTTP {status}, JSON not an object"
        answer = _Answer(asked, status, document if isinstance(document, dict) else {}, took_s)
        if problem:
            raise answer.unexpected(problem)
        return answer

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            )
        return self._session


def _what_failed(error: BaseException, took_s: float) -> str:
    """What went wrong with a request, in words, with how long it took: never empty (a
    timeout's own text is).

    >>> _what_failed(asyncio.TimeoutError(), 2.0004)
    'no answer within 2.0 s'
    >>> _what_failed(ConnectionRefusedError(111, "Connect call failed"), 0.001)
    'connection refused after 0.0 s'
    """
    if isinstance(error, asyncio.TimeoutError | TimeoutError):
        return f"no answer within {took_s:.1f} s"
    cause = error.os_error if isinstance(error, aiohttp.ClientConnectorError) else error
    number = cause.errno if isinstance(cause, OSError) else None
    if isinstance(number, int) and number > 0:
        what = os.strerror(number).lower()
    else:
        what = str(error).strip() or type(error).__name__
    return f"{what} after {took_s:.1f} s"


@dataclass(frozen=True)
class _Ended:
    """Why one leadership's work ended. `silent`: the sidecar did not answer, so it may still
    lead at that epoch when it answers again (it never stopped leading, we only lost word of
    it); otherwise that epoch is over for us and only a new one restarts the work."""

    epoch: int
    reason: str
    silent: bool


async def run_while_leading(
    client: RingsideClient,
    work: Callable[[int], Coroutine[Any, Any, None]],
    *,
    poll_s: float = POLL_S,
    once: bool = False,
) -> None:
    """Run `work(epoch)` whenever this node leads; cancel it the moment it stops leading or
    the sidecar stops answering.

    Waits (polling `/v1/leader`) until this node leads, starts `work` with the epoch, then
    checks the fence for that epoch every `poll_s` (sooner when the reported validity is
    shorter). The work is cancelled when the fence fails, when a fence request gets no answer
    (a timeout, a refused connection, garbage), and at the latest when the validity last
    reported runs out. Then it waits for the sidecar and for this node to lead again and
    starts `work` anew: at a new epoch, or at the same one if only the sidecar's answers had
    stopped and it still leads there (else a node that leads would run nothing).

    `FenceLost` or `SidecarUnavailable` raised by `work` itself also end that leadership, not
    this loop; if `work` returns, its leadership's work is done (it runs again at the next
    epoch). Only another exception from `work` (a bug) or the caller's cancellation ends the
    loop. With `once`, returns after the first leadership ends.
    """
    ended: _Ended | None = None
    while True:
        epoch, valid_until = await _until_leading(client, poll_s, ended)
        task = asyncio.create_task(work(epoch), name=f"leader-work-{epoch}")
        stopped: _Ended | None = None
        try:
            stopped = await _guard(client, epoch, valid_until, task, poll_s)
        finally:
            task.cancel()  # a no-op if it has ended; waited for without taking its exception
            await asyncio.wait({task})
        ended = _outcome(epoch, task, stopped)
        level = logging.WARNING if ended.silent else logging.INFO
        log.log(level, "leader-only work at epoch %d stopped: %s", epoch, ended.reason)
        if once:
            return


def _outcome(epoch: int, task: asyncio.Task[None], stopped: _Ended | None) -> _Ended:
    """Why `task` ended, raising its exception if that was not about the sidecar (a bug)."""
    error = None if task.cancelled() else task.exception()
    if isinstance(error, SidecarUnavailable):
        return _Ended(epoch, f"the work's request failed: {error}", silent=True)
    if isinstance(error, FenceLost):
        return _Ended(epoch, f"the work's fence failed: {error}", silent=False)
    if error is not None:
        raise error
    if stopped is not None:
        return stopped
    return _Ended(epoch, "the work returned", silent=False)


async def _until_leading(
    client: RingsideClient, poll_s: float, ended: _Ended | None
) -> tuple[int, float]:
    """The epoch this node leads at, once it is one the work may (re)start with, and until
    when (loop time) the sidecar promised that leadership."""
    loop = asyncio.get_running_loop()
    unanswered = False
    while True:
        sent = loop.time()
        try:
            now = await client.leader()
        except SidecarUnavailable as e:
            if not unanswered:
                log.warning("waiting for the sidecar: %s", e)
            unanswered = True
        else:
            if unanswered:
                log.info("the sidecar at %s answers again", client.base_url)
            unanswered = False
            if now.is_self and now.epoch is not None and _may_start(now.epoch, ended):
                promised = now.valid_for_s if now.valid_for_s is not None else poll_s
                return now.epoch, sent + promised
        await asyncio.sleep(poll_s)


def _may_start(epoch: int, ended: _Ended | None) -> bool:
    if ended is None or epoch > ended.epoch:
        return True
    return ended.silent and epoch == ended.epoch


async def _guard(
    client: RingsideClient,
    epoch: int,
    valid_until: float,
    task: asyncio.Task[None],
    poll_s: float,
) -> _Ended | None:
    """Return why `task` must stop (None once it ended on its own): the fence failed, went
    unanswered, or the validity last promised (`valid_until`, loop time, counted from the
    asking) ran out without the sidecar confirming it."""
    loop = asyncio.get_running_loop()
    while not task.done():
        sent = loop.time()
        budget = max(0.01, valid_until - sent)
        check = asyncio.ensure_future(client.fence(epoch))
        try:  # never wait on an answer past the validity we hold, nor past the work's end
            await asyncio.wait({check, task}, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        finally:
            check.cancel()  # a no-op once answered
            await asyncio.wait({check})
        if check.cancelled():
            if task.done():
                return None
            asked = f"GET /v1/fence?epoch={epoch} (sidecar {client.base_url})"
            why = f"no answer within {budget:.1f} s, when the validity it gave ran out"
            return _Ended(epoch, f"{asked}: {why}", silent=True)
        try:
            valid_for = check.result()
        except FenceLost as e:
            return _Ended(epoch, f"the sidecar does not lead at epoch {epoch}: {e}", False)
        except SidecarUnavailable as e:
            return _Ended(epoch, str(e), silent=True)
        valid_until = sent + valid_for  # counted from the asking, not the answer
        wait = min(poll_s, valid_until - loop.time())
        if wait <= 0:
            why = f"the fence's answer came after its validity ({valid_for:.3f} s) ran out"
            return _Ended(epoch, why, silent=True)
        await asyncio.wait({task}, timeout=wait)
    return None


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
