"""Streams and long polls must not starve the short routes, and `/ready` follows the quorum
check (issue 21; `sidecar.api.streams`, `sidecar.api.bodies.readiness`).

Measured before: 300 local `/v1/events` clients, or 300 `/ready?wait=300`, held every one of
the 256 connections the API accepts, and `/health`, `/ready` and `/v1/fence` were refused
until they left; and `/ready` said 200 while `/v1/status` said `quorum_ok: false`. The agent
runs in-process on the in-memory store, served exactly as the daemon serves it (the guarded
protocol and its connection limits), so this takes a couple of seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar.agent import Agent
from sidecar.api.bodies import readiness
from sidecar.api.server import STATE, create_app
from sidecar.api.serving import MAX_CONNECTIONS, Limits, guarded, json_errors_factory
from sidecar.api.streams import MAX_STREAMS, RETRY_AFTER_S
from sidecar.store.memory import MemoryStore
from sidecar.store.model import StoreMember
from tests.agents import running_agent, until
from tests.api_support import assert_documented
from tests.waiting import wait_for

ClientFactory = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]

STREAM_CLIENTS = 300
ANSWER_WITHIN_S = 0.1  # the bound for /health and /v1/fence under this load
SAMPLES = 10


def lose_quorum(store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the store's cluster three voters of which two do not answer (the second etcd
    member stopped): the quorum check finds 1 of 3, while keepalives still succeed, so the
    sidecar's view stays fresh (within its validity budget)."""
    alone = StoreMember(store.member_id, "memory", (), ("memory://",))
    stopped = tuple(
        StoreMember(store.member_id + n, f"stopped{n}", (), (f"http://127.0.0.1:{n}",))
        for n in (1, 2)
    )

    async def members() -> tuple[StoreMember, ...]:
        return (alone, *stopped)

    monkeypatch.setattr(store, "members", members)


@pytest.fixture
async def leader_without_quorum(
    store: MemoryStore, cluster: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Agent]:
    async with running_agent(store, "hetzner-cpu1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader and readiness(agent.state()) is None)
        lose_quorum(store, monkeypatch)
        await until(lambda: not agent.health.quorum_ok)
        yield agent


# --- /ready and the quorum -------------------------------------------------------------------


async def test_ready_is_503_while_the_quorum_check_finds_no_quorum(
    leader_without_quorum: Agent, aiohttp_client: ClientFactory
) -> None:
    agent = leader_without_quorum
    client = await aiohttp_client(create_app(agent))
    response = await client.get("/ready")
    body = await response.json()
    assert_documented("/ready", "GET", response.status, body)
    assert response.status == 503, body
    assert body["ready"] is False
    assert body["reason"].startswith("etcd has no quorum: 1 of 3 voters healthy"), body
    assert "stopped1 does not answer" in body["reason"]
    status = await (await client.get("/v1/status")).json()
    assert status["quorum_ok"] is False
    # The freshness budget is not spent: only the quorum check tells.
    assert not agent.leadership().stale
    assert status["confirmed_age_s"] < agent.budget_s


async def test_readiness_names_the_lost_quorum_before_anything_else(
    store: MemoryStore, cluster: str
) -> None:
    async with running_agent(store, "hetzner-cpu1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader and readiness(agent.state()) is None)
        state = agent.state()
    health = state.quorum
    lost = dataclasses.replace(
        health, voters_healthy=1, voters_total=3, quorum_ok=False, error="no quorum: m2 down"
    )
    assert readiness(dataclasses.replace(state, quorum=lost)) == (
        "etcd has no quorum: 1 of 3 voters healthy (m2 down)"
    )
    unknown = dataclasses.replace(lost, voters_healthy=0, voters_total=0, error="not checked yet")
    reason = readiness(dataclasses.replace(state, quorum=unknown, registered=False))
    assert reason == "etcd quorum not confirmed yet: not checked yet"
    assert readiness(dataclasses.replace(state, quorum=health)) is None


# --- streams and long polls ------------------------------------------------------------------


@asynccontextmanager
async def served_like_the_daemon(app: web.Application, limits: Limits) -> AsyncIterator[int]:
    """Serve `app` on a free loopback port the way `sidecar.daemon` does; yields the port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    assert runner.server is not None
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        guarded(json_errors_factory(runner.server), limits), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await runner.cleanup()


@dataclasses.dataclass
class StreamClient:
    """One client of a stream or long poll: what it got back, and whether it is over."""

    path: str
    head: bytes = b""
    body: bytes = b""
    ended: bool = False
    writer: asyncio.StreamWriter | None = None

    @property
    def status(self) -> int | None:
        line = self.head.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None

    def header(self, name: str) -> str | None:
        for line in self.head.decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    async def run(self, port: int) -> None:
        """Ask, then hold the connection open until the server ends it (or the test does)."""
        try:
            reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
            self.writer.write(f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            self.head = await reader.readuntil(b"\r\n\r\n")
            if self.status != 200:
                self.body = await reader.read()  # to the end: the server closes after it
            else:
                await reader.read(1)  # a stream: hold it until the test lets go
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.ended = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def one_shot(port: int, path: str) -> tuple[int | None, Any, float]:
    """GET `path` on a new connection: the status (None: no answer), body, and seconds taken
    from connecting to the last byte."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        answer = await asyncio.wait_for(reader.read(), 2.0)
        writer.close()
    except (ConnectionError, asyncio.TimeoutError):
        answer = b""
    took = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2:
        return None, None, took
    return int(line[1]), json.loads(body), took


async def test_300_streams_and_long_polls_leave_the_short_routes_answering(
    leader_without_quorum: Agent,
) -> None:
    agent = leader_without_quorum  # not ready (no quorum), so /ready?wait= holds
    epoch = agent.leadership().epoch
    app = create_app(agent)
    limits = Limits()
    assert STREAM_CLIENTS > MAX_CONNECTIONS > MAX_STREAMS  # enough to fill the old cap
    clients = [
        StreamClient("/v1/events" if n % 2 else "/ready?wait=300") for n in range(STREAM_CLIENTS)
    ]
    async with served_like_the_daemon(app, limits) as port:
        tasks = [asyncio.create_task(c.run(port)) for c in clients]
        try:
            # Settled: every client is either over (answered or cut off) or holds a connection.
            await wait_for(
                lambda: sum(c.ended for c in clients) + limits.active == STREAM_CLIENTS,
                10.0,
                what="the stream clients did not settle",
            )
            timings: dict[str, list[float]] = {"/health": [], "/v1/fence": []}
            for _ in range(SAMPLES):
                for path, query in (("/health", ""), ("/v1/fence", f"?epoch={epoch}")):
                    status, body, took = await one_shot(port, path + query)
                    assert status is not None, f"{path} did not answer at all"
                    assert_documented(path, "GET", status, body)
                    assert status in (200, 409), (path, status, body)
                    timings[path].append(took)
            for path, samples in timings.items():
                assert max(samples) < ANSWER_WITHIN_S, (path, [round(t, 3) for t in samples])

            assert app[STATE].streams.held == MAX_STREAMS
            assert limits.active == MAX_STREAMS
            over = [c for c in clients if c.ended]
            assert len(over) == STREAM_CLIENTS - MAX_STREAMS
            # All 300 connect at once: past the connection cap, a newcomer takes the place of
            # one whose request head is not in yet (`serving.Limits`); those end unanswered.
            cut_off = [c for c in over if c.head == b""]
            assert len(cut_off) == limits.evicted + limits.refused, (len(cut_off), limits)
            refused = [c for c in over if c.head != b""]
            assert len(refused) >= MAX_CONNECTIONS - MAX_STREAMS  # at most 44 were cut off
            for client in refused:
                assert client.status == 429, (client.path, client.head, client.body)
                assert client.header("Retry-After") == str(RETRY_AFTER_S)
                assert client.body.count(b"\n") == 0  # one line
                error = json.loads(client.body)
                assert_documented(client.path.split("?")[0], "GET", 429, error)
                assert "too many event streams and long polls" in error["error"]
        finally:
            for client in clients:
                client.close()
            await asyncio.gather(*tasks, return_exceptions=True)

        # Slots are given back: once the holders left, a stream is admitted again.
        await wait_for(lambda: app[STATE].streams.held == 0, 5.0, what="slots not given back")
        again = StreamClient("/v1/events")
        task = asyncio.create_task(again.run(port))
        try:
            await wait_for(lambda: again.status is not None, 5.0, what="no stream admitted")
            assert again.status == 200
        finally:
            again.close()
            await task


async def test_ready_without_wait_and_a_ready_node_need_no_slot(
    store: MemoryStore, cluster: str, aiohttp_client: ClientFactory
) -> None:
    """With every slot taken, `/ready` (no wait) still answers, and so does `/ready?wait=`
    when the node is ready at once: only a request that will wait is a long poll."""
    async with running_agent(store, "hetzner-cpu1", cluster) as agent:
        await until(lambda: readiness(agent.state()) is None)
        app = create_app(agent, max_streams=1)
        client = await aiohttp_client(app)
        assert app[STATE].streams.take()  # the one slot, held as a stream would
        for path in ("/ready", "/ready?wait=5"):
            response = await client.get(path)
            assert response.status == 200, await response.text()
        for path in ("/v1/events", "/v1/history"):
            response = await client.get(path)
            body = await response.json()
            assert response.status == 429, body
            assert_documented(path, "GET", 429, body)
            assert response.headers["Retry-After"] == str(RETRY_AFTER_S)
            assert response.headers.get("Connection", "").lower() == "close"
        assert app[STATE].streams.refused == 2
