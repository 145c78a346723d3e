"""A userspace bad network: a TCP proxy that delays and "loses" what passes through it.

Used where the kernel has no netem. Every chunk, in each direction, is held for a delay drawn
from `delay_s +- jitter_s`; with probability `loss` it is held longer, by a retransmission
timeout (TCP's answer to a lost segment is to send it again later, so over TCP, loss shows
up as delay). Order within a direction is kept, as TCP keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Impairment:
    delay_s: float = 0.2
    jitter_s: float = 0.1
    loss: float = 0.05
    retransmit_s: tuple[float, float] = (0.2, 1.0)  # Linux's minimum RTO is 200 ms

    def hold(self, rng: random.Random) -> float:
        held = self.delay_s + rng.uniform(-self.jitter_s, self.jitter_s)
        if rng.random() < self.loss:
            held += rng.uniform(*self.retransmit_s)
        return max(0.0, held)


class ImpairedProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to `target_host:target_port`."""

    def __init__(self, target_host: str, target_port: int, impairment: Impairment) -> None:
        self.target = (target_host, target_port)
        self.impairment = impairment
        self.rng = random.Random(target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy with delay: each chunk leaves at max(its hold, the previous chunk's exit)."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, sink))
        last_exit = 0.0
        try:
            while chunk := await source.read(65536):
                last_exit = max(time.monotonic() + self.impairment.hold(self.rng), last_exit)
                queue.put_nowait((last_exit, chunk))
            queue.put_nowait((last_exit, b""))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                sink.close()

    @staticmethod
    async def _send(queue: asyncio.Queue[tuple[float, bytes]], sink: asyncio.StreamWriter) -> None:
        while True:
            at, chunk = await queue.get()
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if not chunk:
                with contextlib.suppress(Exception):
                    sink.write_eof()
                return
            sink.write(chunk)
            await sink.drain()
