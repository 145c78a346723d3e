"""The orchestrator's client (`sidecar.client`) against real sidecars on the real etcd: leader-only
work runs with the epoch and is cancelled the moment leadership ends (a resign, or a sidecar
gone silent), and the event stream resumes where it broke off."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator

import aiohttp

from sidecar.cli.local_api import SidecarClient
from sidecar.client import FenceLost, RingsideClient, run_while_leading
from sidecar.events import ClusterEvent
from tests.fleet import Fleet, Sidecar
from tests.waiting import wait_for

NODES = ["n1", "n2"]
POLL_S = 0.2


@contextlib.asynccontextmanager
async def leader_work(sidecar: Sidecar) -> AsyncIterator[dict[str, float | int]]:
    """`run_while_leading` against `sidecar`, once; what the work saw: its epoch, and the
    monotonic times it started and was cancelled."""
    seen: dict[str, float | int] = {}

    async def work(epoch: int) -> None:
        seen["epoch"], seen["started"] = epoch, time.monotonic()
        try:
            await asyncio.Event().wait()
        finally:
            seen["cancelled"] = time.monotonic()

    async with RingsideClient(sidecar.url) as client:
        runner = asyncio.create_task(run_while_leading(client, work, poll_s=POLL_S, once=True))
        try:
            yield seen
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def leading(fleet: Fleet) -> tuple[Sidecar, int]:
    for node in NODES:
        fleet.add(node)
    first = await fleet.wait_converged(NODES, within_s=20)
    return fleet.sidecars[first["node_id"]], first["epoch"]


async def test_work_runs_with_the_epoch_and_stops_when_the_node_resigns(fleet: Fleet) -> None:
    leader, epoch = await leading(fleet)
    async with leader_work(leader) as seen:
        await wait_for(lambda: "started" in seen, 5, what="the work did not start")
        assert seen["epoch"] == epoch
        async with aiohttp.ClientSession() as session:
            url = leader.url + "/v1/leader/resign"
            async with session.post(url, headers=leader.auth_header()) as answer:
                assert answer.status == 200
        resigned = time.monotonic()
        await wait_for(lambda: "cancelled" in seen, 5, what="the work outlived the leadership")
        assert seen["cancelled"] - resigned <= POLL_S + 1.0
    async with RingsideClient(leader.url) as client:
        try:
            await client.fence(epoch)
        except FenceLost:
            pass
        else:
            raise AssertionError("the old epoch's fence still holds")
    sync = SidecarClient(leader.url)  # the synchronous client says the same
    assert await asyncio.to_thread(sync.fence, epoch) is None
    now = await fleet.wait_converged(NODES, within_s=5)
    holder = SidecarClient(fleet.sidecars[now["node_id"]].url)
    assert (await asyncio.to_thread(holder.fence, now["epoch"]) or 0) > 0


async def test_work_stops_within_the_validity_when_the_sidecar_goes_silent(fleet: Fleet) -> None:
    """SIGSTOP: the sidecar answers nothing, so the client cannot learn that leadership ended;
    it stops the work once the validity the sidecar last reported has run out."""
    leader, _ = await leading(fleet)
    async with leader_work(leader) as seen:
        await wait_for(lambda: "started" in seen, 5, what="the work did not start")
        leader.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            validity = fleet.lease_ttl - 2.0  # the fleet's TTL minus the default margin
            await wait_for(lambda: "cancelled" in seen, validity + 3, what="work still running")
            assert seen["cancelled"] - frozen <= validity + POLL_S + 1.0
        finally:
            leader.signal(signal.SIGCONT)


async def test_the_event_stream_resumes_after_a_sidecar_restart(fleet: Fleet) -> None:
    watched = fleet.add("n1")
    await fleet.wait_converged(["n1"], within_s=20)
    seen: list[ClusterEvent] = []

    async def follow() -> None:
        async with RingsideClient(watched.url) as client:
            async for event in client.events():
                seen.append(event)

    reader = asyncio.create_task(follow())
    try:
        await wait_for(lambda: bool(seen), 5, what="no event at all")
        watched.signal(signal.SIGTERM)
        assert watched.wait_exit(5) == 0
        before = max(e.revision for e in seen)
        watched.start()
        fleet.add("n2")  # news after the restart
        await wait_for(
            lambda: any(
                e.kind == "member_joined" and e.detail.get("node_id") == "n2" for e in seen
            ),
            15,
            what="the stream did not resume",
        )
        after = [e.revision for e in seen if e.revision > before]
        assert after == sorted(after)  # in order, from where it broke off
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
