"""Waiting on conditions with deadlines: the only way tests wait (no sleeping and hoping)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sidecar.store.model import WatchBatch

WATCH_TIMEOUT_S = 5.0


async def wait_for(predicate: Callable[[], Awaitable[bool]], within_s: float) -> None:
    """Poll `predicate` until it holds; fail the test once `within_s` seconds have passed."""
    deadline = time.monotonic() + within_s
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within_s} s")
        await asyncio.sleep(0.05)


async def next_batch(
    batches: AsyncIterator[WatchBatch], within_s: float = WATCH_TIMEOUT_S
) -> WatchBatch:
    return await asyncio.wait_for(anext(batches), within_s)
