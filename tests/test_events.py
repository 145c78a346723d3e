"""The event log's replay-then-follow subscription, alone and behind `/v1/events?since=`.

A replay that awaits between events (a slow client) must not iterate the live log: an event
added meanwhile used to end the stream with "deque mutated during iteration".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar.agent import Agent
from sidecar.api.server import create_app
from sidecar.asyncio_compat import timeout
from sidecar.event_log import EventLog
from sidecar.events import ClusterEvent
from sidecar.store.memory import MemoryStore
from tests.agents import running_agent, until

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

BASE = 1_000_000  # above any revision the in-memory store reaches in a test


def joined(node_id: str, revision: int) -> ClusterEvent:
    return ClusterEvent("member_joined", revision, {"node_id": node_id})


def test_subscribe_since_splits_past_and_future_without_overlap() -> None:
    log = EventLog()
    for revision in (5, 6, 7):
        log.add(joined(f"n{revision}", revision))
    replay, queue = log.subscribe_since(5)
    later = joined("n8", 8)
    log.add(later)

    assert [e.revision for e in replay] == [6, 7]  # a copy: the later add is not in it
    assert queue.get_nowait() is later  # ... which came through the queue, and only once
    assert queue.empty()


def test_subscribe_since_a_future_revision_replays_nothing() -> None:
    log = EventLog()
    log.add(joined("n1", 1))
    replay, queue = log.subscribe_since(1)
    assert replay == ()
    assert queue.empty()


async def test_events_added_during_a_slow_replay_arrive_once_in_order(
    store: MemoryStore,
    cluster: str,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running_agent(store, "hetzner-cpu1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader and agent.registered)
        early = [joined(f"early-{i}", BASE + i) for i in range(5)]
        late = [joined(f"late-{i}", BASE + 100 + i) for i in range(5)]
        for event in early:
            agent.events.add(event)
        slow_replay_adding(monkeypatch, agent, late)

        client = await aiohttp_client(create_app(agent))
        received = await read_stream(client, f"/v1/events?since={BASE - 1}", until_id="late-4")

    # Every replayed and every later event exactly once, in the order they happened.
    assert received == [e.detail["node_id"] for e in early + late]


def slow_replay_adding(
    monkeypatch: pytest.MonkeyPatch, agent: Agent, late: list[ClusterEvent]
) -> None:
    """Make each SSE write slow, and add the next of `late` to the log while it waits: the
    events arrive exactly while the replay is being written."""
    write = web.StreamResponse.write
    pending = list(late)

    async def slow_write(self: web.StreamResponse, data: bytes | bytearray | memoryview) -> None:
        await write(self, data)
        if bytes(data).startswith(b"id:") and pending:
            await asyncio.sleep(0.01)  # a slow client: the handler is suspended here
            agent.events.add(pending.pop(0))

    monkeypatch.setattr(web.StreamResponse, "write", slow_write)


async def read_stream(
    client: TestClient[web.Request, web.Application], url: str, *, until_id: str
) -> list[str]:
    """The `node_id` of each event streamed from `url`, until `until_id` or the stream ends."""
    response = await client.get(url)
    assert response.status == 200
    text = ""
    # A stream that stalls or breaks ends the reading; the caller's assertion shows what came.
    with contextlib.suppress(asyncio.TimeoutError, aiohttp.ClientPayloadError):
        async with timeout(5):
            while f'"{until_id}"' not in text:
                chunk = await response.content.readany()
                if not chunk:
                    break
                text += chunk.decode()
    response.close()
    blocks = [b for b in text.split("\n\n") if b.startswith("id:")]
    ids = [json.loads(b.split("data: ", 1)[1])["detail"]["node_id"] for b in blocks]
    return [i for i in ids if i.startswith(("early-", "late-"))]
