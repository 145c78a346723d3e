"""Newline-delimited JSON from a streamed gateway response (etcd's watch stream).

The gateway streams a watch as one JSON object per line, in chunks that split lines
anywhere. Reading it must neither lose bytes when a read times out nor cap the line length.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from sidecar.deadline import Deadline


class LineReader:
    """Reads newline-separated JSON objects from a streamed response.

    A read that outlives its timeout is kept, not cancelled, so no bytes are ever lost
    between a timeout and the next read. Lines may be any length (a watch catching up on
    many keys sends one long line).
    """

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._buffer = b""
        self._pending: asyncio.Task[bytes] | None = None

    async def next(self, wait_s: float) -> dict[str, Any] | None:
        """The next object; None if nothing complete arrived within `wait_s` seconds.

        Raises `StreamEnded` when the server closed the stream.
        """
        deadline = Deadline(wait_s)
        while b"\n" not in self._buffer:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._response.content.readany())
            done, _ = await asyncio.wait({self._pending}, timeout=deadline.remaining())
            if not done:
                return None
            task, self._pending = self._pending, None
            try:
                chunk = task.result()
            except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as e:
                raise StreamEnded(describe_error(e)) from None
            if not chunk:
                raise StreamEnded("closed by the server")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        if not line.strip():
            return await self.next(deadline.remaining())
        try:
            value = json.loads(line)
        except ValueError:
            raise StreamEnded(f"not JSON: {line[:60]!r}") from None
        if not isinstance(value, dict):
            raise StreamEnded(f"not a JSON object: {line[:60]!r}")
        return value

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class StreamEnded(Exception):
    """The streamed response broke or ended; the watch resumes elsewhere."""


def describe_error(error: BaseException) -> str:
    """One short line for a transport error, for logs and endpoint states."""
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]
