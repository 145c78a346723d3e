"""Slow and numerous clients must not starve the local API (sidecar.api.serving): measured
before, 1,100 clients sending a header byte a second kept /health silent for 45 s."""

from __future__ import annotations

import asyncio
import resource
import time

import aiohttp

from tests.fleet import Fleet

SLOW_CLIENTS = 1100


async def slow_client(port: int, stop: asyncio.Event, opened: list[int]) -> None:
    """Connect, then send one header byte a second, reconnecting when closed."""
    while not stop.is_set():
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        opened[0] += 1
        try:
            for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"x" * 60:
                writer.write(bytes([byte]))
                await writer.drain()
                if stop.is_set():
                    break
                await asyncio.sleep(1.0)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def test_health_answers_through_1100_slow_clients(fleet: Fleet) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # room for the attack
    try:
        sidecar = fleet.add("n1", wrapper=("prlimit", "--nofile=1024:1024", "--"))
        await fleet.wait_converged(["n1"], within_s=20)
        stop, opened = asyncio.Event(), [0]
        attackers = [
            asyncio.create_task(slow_client(sidecar.port, stop, opened))
            for _ in range(SLOW_CLIENTS)
        ]
        try:
            await asyncio.sleep(2.0)  # let them connect and fill what they can
            assert opened[0] >= SLOW_CLIENTS / 2, opened
            answered = 0
            timeout = aiohttp.ClientTimeout(total=3)
            deadline = time.monotonic() + 12  # past the 5 s header timeout, twice
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while time.monotonic() < deadline:
                    async with session.get(sidecar.url + "/health") as response:
                        assert response.status == 200
                    answered += 1
                    await asyncio.sleep(0.5)
            assert answered >= 15, answered
        finally:
            stop.set()
            await asyncio.gather(*attackers, return_exceptions=True)
        status = await fleet.get(sidecar, "/v1/status")
        assert status is not None
        assert status["quorum_ok"] is True  # etcd's connections were not starved either
        log = sidecar.log()
        assert log.count("Traceback") == 0
        assert len(log) < 200_000, len(log)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
