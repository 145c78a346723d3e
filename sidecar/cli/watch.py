"""`ringside status --watch`: one call per change, from a sidecar's event stream or by polling etcd.

Both loops start from the status already shown and keep a `ClusterState`, so a change that
arrives twice (replayed after a reconnect) is shown once, and a change that happened while the
stream was down is still shown: after any break the loop reads a fresh status, reports the
difference, and follows again. A source that stops answering is reported once (`note`) and
retried every `retry_s` until it answers again; the loops run until interrupted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn

from sidecar.cli.local_api import SidecarClient, SidecarUnreachable
from sidecar.cli.reports import ClusterState, NoAnswer, StatusReport
from sidecar.events import ClusterEvent

Emit = Callable[[ClusterEvent], None]
Note = Callable[[str], None]


def follow_sidecar(
    client: SidecarClient,
    first: StatusReport,
    emit: Emit,
    note: Note,
    *,
    retry_s: float = 1.0,
    idle_s: float = 40.0,
) -> NoReturn:
    """Follow `/v1/events`, starting after the status `first` was read.

    Events are asked for from one revision before the last seen: a quorum event carries the
    revision of the view it happened under, so later events can share a revision with earlier
    ones, and the state drops the repeats. A sidecar that answers garbage raises `BadAnswer`.
    """
    state = ClusterState.of(first)
    since = first.revision - 1
    lost: str | None = None
    caught_up = True
    while True:
        try:
            if not caught_up:
                report = client.status()
                if lost is not None:
                    note(f"the sidecar at {client.base_url} answers again")
                    lost = None
                for event in state.catch_up(report):
                    emit(event)
                since = max(since, report.revision - 1)
                caught_up = True
            for event in client.events(since, idle_s=idle_s):
                since = max(since, event.revision - 1)
                if state.apply(event):
                    emit(event)
            caught_up = False  # the stream ended or idled: check nothing was missed
        except SidecarUnreachable as e:
            caught_up = False
            if lost is None:
                note(f"{e}; retrying every {retry_s:g} s")
                lost = str(e)
            time.sleep(retry_s)


async def follow_etcd(
    read: Callable[[], Awaitable[StatusReport]],
    first: StatusReport,
    emit: Emit,
    note: Note,
    *,
    interval_s: float = 1.0,
) -> NoReturn:
    """Read the status every `interval_s` and report what changed since the last read."""
    state = ClusterState.of(first)
    lost: str | None = None
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await read()
        except NoAnswer as e:
            if lost is None:
                note(f"{e}; retrying every {interval_s:g} s")
                lost = str(e)
            continue
        if lost is not None:
            note("etcd answers again")
            lost = None
        for event in state.catch_up(report):
            emit(event)
