"""Network partitions without netem: a userspace TCP proxy whose bytes can vanish.

A partition on a real network is not a refused connection: packets are lost, the sender hears
nothing, and only its own timeouts tell it something is wrong. `Route` models that between one
sidecar and the etcd members: one proxy per member on loopback, all cut or healed together,
in either direction or both:

- `Cut.BOTH`: nothing passes (a cable pulled, a firewall dropping everything);
- `Cut.ANSWERS`: requests reach etcd and are acted on, answers never come back (the case
  where a leader's resign or revoke lands although it never hears so);
- `Cut.REQUESTS`: what the sidecar sends never arrives; what etcd sends still does.

A cut direction stops *reading* its source, so the bytes stay in kernel buffers exactly as
unacknowledged segments would: nothing is refused, reset or corrupted, and a connection that
survives the cut carries on intact after `heal()`, as TCP does after retransmitting.
Connections accepted during a cut are held the same way (a lost SYN looks like a stall too).

The proxies run on an event loop in a thread of their own, so a test that blocks its own
loop (waiting for a process, pausing an etcd member) never stalls the traffic it observes::

    with Proxies() as proxies:
        route = proxies.route(etcd.client_urls)
        fleet.add("a", env={"RINGSIDE_ETCD_ENDPOINTS": ",".join(route.urls)})
        route.cut(Cut.ANSWERS)
        ...
        route.heal()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import threading
import urllib.parse
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class Cut(enum.Enum):
    NONE = "none"
    BOTH = "both"
    REQUESTS = "requests"  # sidecar -> etcd lost
    ANSWERS = "answers"  # etcd -> sidecar lost

    @property
    def requests_pass(self) -> bool:
        return self in (Cut.NONE, Cut.ANSWERS)

    @property
    def answers_pass(self) -> bool:
        return self in (Cut.NONE, Cut.REQUESTS)


class Route:
    """One sidecar's path to etcd: a proxy per member, cut and healed as one."""

    def __init__(self, proxies: Proxies, targets: list[tuple[str, int]]) -> None:
        self._proxies = proxies
        self._targets = targets
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self.ports: list[int] = []
        self.state = Cut.NONE
        self._requests_open = asyncio.Event()
        self._answers_open = asyncio.Event()
        self._requests_open.set()
        self._answers_open.set()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def cut(self, how: Cut = Cut.BOTH) -> None:
        """From now on, the chosen direction(s) deliver nothing until `heal()`."""
        self._proxies.call(self._set(how))

    def heal(self) -> None:
        self._proxies.call(self._set(Cut.NONE))

    async def _set(self, how: Cut) -> None:
        self.state = how
        for event, passes in (
            (self._requests_open, how.requests_pass),
            (self._answers_open, how.answers_pass),
        ):
            if passes:
                event.set()
            else:
                event.clear()

    async def _start(self) -> None:
        for target in self._targets:
            server = await asyncio.start_server(
                functools.partial(self._accept, target=target), "127.0.0.1", 0
            )
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        target: tuple[str, int],
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._requests_open.wait()  # a SYN lost in a cut: the client just waits
            try:
                up_reader, upstream = await asyncio.open_connection(*target)
            except OSError:
                return  # the member is down: the client sees its connection closed
            await asyncio.gather(
                _pump(reader, upstream, self._requests_open),
                _pump(up_reader, writer, self._answers_open),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # the proxies are closing: this connection simply ends
        finally:
            self._connections.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()


async def _pump(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, open_: asyncio.Event
) -> None:
    """Copy until end of stream; while `open_` is clear, neither read nor deliver."""
    try:
        while True:
            await open_.wait()
            data = await source.read(65536)
            if not data:
                break
            await open_.wait()  # cut while the chunk was in flight: it waits with the rest
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            sink.write_eof()


class Proxies:
    """The thread and event loop that run every `Route` of a test or campaign."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="blackhole", daemon=True
        )
        self._routes: list[Route] = []
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run `coroutine` on the proxies' loop and return its result (thread-safe)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    def route(self, client_urls: Iterable[str]) -> Route:
        """A new route to the members at `client_urls` (http://host:port)."""
        targets = []
        for url in client_urls:
            parts = urllib.parse.urlsplit(url)
            if parts.hostname is None or parts.port is None:
                raise ValueError(f"not a host:port URL: {url}")
            targets.append((parts.hostname, parts.port))

        async def make() -> Route:
            route = Route(self, targets)
            await route._start()
            return route

        route = self.call(make())
        self._routes.append(route)
        return route

    def close(self) -> None:
        async def close_all() -> None:
            await asyncio.gather(*(r._close() for r in self._routes), return_exceptions=True)

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(close_all())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Proxies:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
