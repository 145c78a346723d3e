"""Waiting on conditions with deadlines: the only way tests wait (no sleeping and hoping)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sidecar.store.model import WatchBatch

WATCH_TIMEOUT_S = 5.0


async def wait_for(
    predicate: Callable[[], Awaitable[bool] | bool],
    within_s: float,
    *,
    what: str = "condition not met",
    interval_s: float = 0.05,
) -> None:
    """Poll `predicate` (plain or async) until it holds; fail the test with `what` once
    `within_s` seconds have passed."""
    deadline = time.monotonic() + within_s
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {within_s} s")
        await asyncio.sleep(interval_s)


async def next_batch(
    batches: AsyncIterator[WatchBatch], within_s: float = WATCH_TIMEOUT_S
) -> WatchBatch:
    return await asyncio.wait_for(anext(batches), within_s)
