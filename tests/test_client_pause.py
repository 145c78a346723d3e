"""The orchestrator's library outlives its sidecar: a sidecar that does not answer (paused,
gone, garbled) ends a leadership for `run_while_leading`, never the orchestrator's process,
and the work runs again once this node leads again. Against a stand-in sidecar served in this
process (fast, every failure on demand), and against a real sidecar frozen with SIGSTOP."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.cli.local_api import SidecarClient, SidecarUnreachable
from sidecar.client import FenceLost, RingsideClient, SidecarUnavailable, run_while_leading
from sidecar.testing.localcluster import free_port
from tests.fleet import Fleet
from tests.waiting import wait_for

POLL_S = 0.05
TIMEOUT_S = 0.2  # the client's per-request timeout against the stand-in


class StandIn:
    """A sidecar's `/v1/leader` and `/v1/fence` as the test says: it leads at `epoch` for
    `valid_for_s`, or its `mode` is to hang, or to answer garbage or HTTP 500."""

    def __init__(self) -> None:
        self.epoch = 7
        self.valid_for_s = 3.0
        self.leader_asked = 0
        self.url = ""
        self._mode = "lead"
        self._running = asyncio.Event()
        self._running.set()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        """lead | hang | garbage | error; a hung request is answered when it leaves "hang",
        as a paused sidecar's are after SIGCONT."""
        self._mode = mode
        if mode == "hang":
            self._running.clear()
        else:
            self._running.set()

    async def _misbehave(self) -> web.Response | None:
        await self._running.wait()
        if self.mode == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>")
        if self.mode == "error":
            return web.json_response({"error": "boom"}, status=500)
        return None

    async def leader(self, request: web.Request) -> web.Response:
        self.leader_asked += 1
        return await self._misbehave() or web.json_response(
            {"leader": "n1", "epoch": self.epoch, "is_self": True, "valid_for_s": self.valid_for_s}
        )

    async def fence(self, request: web.Request) -> web.Response:
        misbehaving = await self._misbehave()
        if misbehaving is not None:
            return misbehaving
        if int(request.query["epoch"]) != self.epoch:
            return web.json_response({"error": f"epoch is {self.epoch}"}, status=409)
        return web.json_response({"valid_for_s": self.valid_for_s})


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    fake = StandIn()
    app = web.Application()
    app.router.add_get("/v1/leader", fake.leader)
    app.router.add_get("/v1/fence", fake.fence)
    async with TestServer(app, host="127.0.0.1") as server:
        fake.url = str(server.make_url("")).rstrip("/")
        yield fake


@dataclass
class Runs:
    """What the leader-only work saw: each run's epoch, and how many runs have ended."""

    epochs: list[int] = field(default_factory=list)
    ended: int = 0


@contextlib.asynccontextmanager
async def leading_loop(
    client: RingsideClient, runs: Runs, *, fencing: RingsideClient | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """`run_while_leading` (not `once`) through `client`, with work shaped like
    docs/orchestrator.md's: it checks its own fence through `fencing` between steps. Cancelled
    on the way out; the caller's cancellation must end it as such."""

    async def work(epoch: int) -> None:
        runs.epochs.append(epoch)
        try:
            while True:
                if fencing is not None:
                    await fencing.fence(epoch)
                await asyncio.sleep(0.01)
        finally:
            runs.ended += 1

    runner = asyncio.create_task(run_while_leading(client, work, poll_s=POLL_S))
    try:
        yield runner
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        assert runner.cancelled(), "the caller's cancellation did not end the loop"


def alive(runner: asyncio.Task[None]) -> bool:
    """The loop still runs: nothing escaped it (a finished task would hold the exception)."""
    if runner.done():
        raise AssertionError(f"run_while_leading ended: {runner.exception()!r}")
    return True


async def failure_of(call: object) -> str:
    with pytest.raises(SidecarUnavailable) as caught:
        await call  # type: ignore[misc]
    return str(caught.value)


async def test_every_failure_says_what_was_asked_what_happened_and_after_how_long(
    stand_in: StandIn,
) -> None:
    async with RingsideClient(stand_in.url, timeout_s=TIMEOUT_S) as client:
        asked = f"GET /v1/fence?epoch=7 (sidecar {stand_in.url}): "
        stand_in.mode = "hang"  # a paused sidecar: the timeout's own text is empty
        assert re.fullmatch(
            re.escape(asked) + r"no answer within 0\.[23] s", await failure_of(client.fence(7))
        )
        stand_in.mode = "garbage"
        assert await failure_of(client.fence(7)) == (
            asked + "HTTP 200 with no JSON (b'<html>502 Bad Gateway</html>') after 0.0 s"
        )
        stand_in.mode = "error"
        assert await failure_of(client.fence(7)) == asked + "HTTP 500 (boom) after 0.0 s"
    closed = f"http://127.0.0.1:{free_port()}"
    async with RingsideClient(closed) as client:
        assert await failure_of(client.leader()) == (
            f"GET /v1/leader (sidecar {closed}): connection refused after 0.0 s"
        )


def test_the_command_lines_client_says_what_went_unanswered_and_for_how_long() -> None:
    """The synchronous client (`ringside` commands, `SidecarClient.fence`) against a sidecar
    that accepts connections and never answers, as a paused one does."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel accepts; nobody reads
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(SidecarUnreachable) as caught:
            SidecarClient(url, timeout_s=0.2).fence(7)
    assert str(caught.value) == (
        f"cannot reach the sidecar at {url}: no answer to GET /v1/fence?epoch=7 within 0.2 s"
    )


@pytest.mark.parametrize("mode", ["hang", "garbage", "error"])
async def test_a_sidecar_that_does_not_answer_ends_the_leadership_not_the_loop(
    stand_in: StandIn, mode: str
) -> None:
    """The loop's own fence check gets no answer: the work stops at once (not when the
    validity runs out), and runs again when the sidecar answers again."""
    runs = Runs()
    async with (
        RingsideClient(stand_in.url, timeout_s=TIMEOUT_S) as client,
        leading_loop(client, runs) as runner,
    ):
        await wait_for(lambda: runs.epochs == [7], 2, what="the work did not start")
        stand_in.mode = mode
        failed = time.monotonic()
        await wait_for(lambda: runs.ended == 1, 2, what="the work outlived its sidecar")
        assert time.monotonic() - failed <= TIMEOUT_S + 0.5  # validity left: 3 s
        assert alive(runner)
        stand_in.mode = "lead"  # it never stopped leading at 7: the work comes back there
        await wait_for(lambda: runs.epochs == [7, 7], 2, what="the work did not come back")
        stand_in.epoch = 9  # and a new leadership gets its own run
        await wait_for(lambda: runs.epochs == [7, 7, 9], 2, what="no run at the new epoch")
        assert alive(runner)


async def test_the_works_own_unanswered_fence_ends_the_leadership_not_the_loop(
    stand_in: StandIn,
) -> None:
    """docs/orchestrator.md's work calls `fence` itself; when that call fails first (here the
    loop's own client waits longer), its `SidecarUnavailable` must not escape the loop."""
    runs = Runs()
    stand_in.valid_for_s = 30.0
    async with (
        RingsideClient(stand_in.url, timeout_s=30) as patient,
        RingsideClient(stand_in.url, timeout_s=TIMEOUT_S) as hasty,
        leading_loop(patient, runs, fencing=hasty) as runner,
    ):
        await wait_for(lambda: runs.epochs == [7], 2, what="the work did not start")
        stand_in.mode = "hang"
        asked = stand_in.leader_asked
        await wait_for(lambda: runs.ended == 1, 2, what="the work outlived its sidecar")
        # the loop does not sit on its own unanswered fence: it waits to lead again
        await wait_for(lambda: stand_in.leader_asked > asked, 2, what="the loop hung")
        assert alive(runner)
        stand_in.mode = "lead"
        await wait_for(lambda: runs.epochs == [7, 7], 2, what="the work did not come back")


async def test_the_work_stops_when_the_validity_runs_out_unconfirmed(stand_in: StandIn) -> None:
    """Rule 22: a sidecar slower than the validity it gave ends the work when that runs out,
    whatever the client's own timeout."""
    runs = Runs()
    stand_in.valid_for_s = 0.3
    async with (
        RingsideClient(stand_in.url, timeout_s=30) as client,
        leading_loop(client, runs) as runner,
    ):
        await wait_for(lambda: runs.epochs == [7], 2, what="the work did not start")
        stand_in.mode = "hang"
        hung = time.monotonic()
        await wait_for(lambda: runs.ended == 1, 2, what="the work outlived the validity")
        assert time.monotonic() - hung <= stand_in.valid_for_s + 0.1
        assert alive(runner)


async def test_finished_work_waits_for_the_next_epoch(stand_in: StandIn) -> None:
    started: list[int] = []

    async def work(epoch: int) -> None:
        started.append(epoch)

    async with RingsideClient(stand_in.url, timeout_s=TIMEOUT_S) as client:
        runner = asyncio.create_task(run_while_leading(client, work, poll_s=POLL_S))
        try:
            await wait_for(lambda: started == [7], 2, what="the work did not start")
            asked = stand_in.leader_asked
            await wait_for(lambda: stand_in.leader_asked >= asked + 3, 2, what="no polling")
            assert started == [7]  # still leading at 7: the work is done for that epoch
            stand_in.epoch = 8
            await wait_for(lambda: started == [7, 8], 2, what="no run at the next epoch")
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_a_bug_in_the_work_ends_the_loop(stand_in: StandIn) -> None:
    async def work(epoch: int) -> None:
        raise ValueError(f"bad job at epoch {epoch}")

    async with RingsideClient(stand_in.url, timeout_s=TIMEOUT_S) as client:
        with pytest.raises(ValueError, match="bad job at epoch 7"):
            await asyncio.wait_for(run_while_leading(client, work, poll_s=POLL_S), 5)


async def test_a_paused_sidecar_ends_the_leadership_and_the_work_returns_at_a_new_epoch(
    fleet: Fleet,
) -> None:
    """The issue's measurement: the real sidecar is frozen (SIGSTOP) under docs/orchestrator.md's
    work; the work stops, nothing escapes; the other node takes over; after SIGCONT and the
    other's resignation, this node leads again and the work runs at the new epoch."""
    for node in ("n1", "n2"):
        fleet.add(node)
    first = await fleet.wait_converged(["n1", "n2"], within_s=20)
    frozen = fleet.sidecars[first["node_id"]]
    other = fleet.sidecars["n2" if frozen.node_id == "n1" else "n1"]
    runs = Runs()
    async with (
        RingsideClient(frozen.url, timeout_s=0.5) as client,
        leading_loop(client, runs, fencing=client) as runner,
    ):
        await wait_for(lambda: runs.epochs == [first["epoch"]], 5, what="the work did not start")
        frozen.signal(signal.SIGSTOP)
        try:
            await wait_for(lambda: runs.ended == 1, fleet.lease_ttl, what="the work ran on")
            mine = [other.node_id]  # the frozen node's lease ran out: the other leads alone
            await fleet.wait_converged(mine, within_s=fleet.lease_ttl + 10, leader_among=mine)
            assert alive(runner)
        finally:
            frozen.signal(signal.SIGCONT)
        await fleet.wait_converged(["n1", "n2"], within_s=10, leader_among=[other.node_id])
        async with (
            aiohttp.ClientSession() as session,
            session.post(other.url + "/v1/leader/resign", headers=other.auth_header()) as done,
        ):
            assert done.status == 200, await done.text()
        now = await fleet.wait_converged(["n1", "n2"], within_s=10, leader_among=[frozen.node_id])
        assert now["epoch"] > first["epoch"]
        await wait_for(
            lambda: runs.epochs == [first["epoch"], now["epoch"]],
            5,
            what="no new work",
        )
        assert alive(runner)


async def test_fence_lost_is_still_a_fence_lost(stand_in: StandIn) -> None:
    async with RingsideClient(stand_in.url) as client:
        with pytest.raises(FenceLost, match="epoch is 7"):
            await client.fence(6)
