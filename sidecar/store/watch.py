"""One etcd watch that survives its connection: resume from the next revision, elsewhere.

A watch is a streamed POST to `/v3/watch`. Connections break (a member killed, a network
cut) and, worse, go silent (a member paused or cut off from its peers keeps the TCP
connection open and simply sends nothing). So:

- every delivered revision advances `next_revision`; a new stream starts there, on the next
  endpoint, and etcd replays whatever happened in between: nothing missed, nothing repeated;
- after `probe_interval` seconds of silence the endpoint is asked for its status; if
  it does not answer in time, or it has no Raft leader, the stream is dropped and resumed
  elsewhere;
- a cancel with `compact_revision` raises `Compacted`: the history we needed is gone;
- when no endpoint accepts the watch at all, `StoreUnavailable` ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable

from sidecar.store.codec import JsonObject, as_int, parse_events
from sidecar.store.errors import AuthFailed, Compacted, StoreError
from sidecar.store.gateway import EtcdGateway
from sidecar.store.lines import LineReader, StreamEnded
from sidecar.store.model import WatchBatch

log = logging.getLogger(__name__)


class WatchStream:
    """The state of one logical watch across however many HTTP streams it takes.

    `start_revision` must be a real revision (the caller pins "now" first): every stream,
    the first included, asks for exactly the next revision not yet delivered.
    """

    def __init__(
        self,
        gateway: EtcdGateway,
        key_range: JsonObject,
        start_revision: int,
        prev_kv: bool,
        *,
        probe_interval: float = 2.0,
        on_reconnect: Callable[[], None] = lambda: None,
    ) -> None:
        self._gateway = gateway
        self.probe_interval = probe_interval
        self._on_reconnect = on_reconnect
        self._key_range = key_range
        self._prev_kv = prev_kv
        self.next_revision = start_revision

    def _request(self) -> JsonObject:
        create: JsonObject = {**self._key_range, "start_revision": str(self.next_revision)}
        if self._prev_kv:
            create["prev_kv"] = True
        return {"create_request": create}

    async def batches(self) -> AsyncGenerator[WatchBatch, None]:
        quiet_failures = 0
        while True:
            delivered = False
            async with self._gateway.stream("/v3/watch", self._request()) as (endpoint, reader):
                try:
                    while True:
                        result = await self._next_result(endpoint, reader)
                        for batch in parse_events(result):
                            self.next_revision = batch.revision + 1
                            delivered = True
                            yield batch
                except StreamEnded as e:
                    log.info(
                        "watch on %s broke (%s); resuming at revision %d",
                        endpoint,
                        e,
                        self.next_revision,
                    )
                    self._gateway.mark_failed(endpoint, f"watch: {e}")
                    self._on_reconnect()
            # A stream that breaks before delivering anything, again and again, must not spin.
            quiet_failures = 0 if delivered else quiet_failures + 1
            if quiet_failures:
                await asyncio.sleep(min(1.0, 0.05 * 2**quiet_failures))

    async def _next_result(self, endpoint: str, reader: LineReader) -> JsonObject:
        """The next watch result; probes the endpoint whenever the stream has been quiet."""
        while True:
            message = await reader.next(self.probe_interval)
            if message is None:
                await self._probe(endpoint)
                continue
            result = message.get("result")
            if not isinstance(result, dict):
                raise StreamEnded(f"unexpected watch message: {str(message)[:120]}")
            if result.get("canceled"):
                self._raise_canceled(result)
            return result

    async def _probe(self, endpoint: str) -> None:
        """A quiet stream is fine only if its member still answers and follows a leader."""
        try:
            status = await self._gateway.call_endpoint(endpoint, "/v3/maintenance/status", {})
        except StoreError as e:
            raise StreamEnded(f"silent, and the status probe failed: {e}") from None
        if not as_int(status, "leader"):
            raise StreamEnded("member has no Raft leader")

    def _raise_canceled(self, result: JsonObject) -> None:
        compact_revision = as_int(result, "compact_revision")
        if compact_revision:
            raise Compacted(
                f"watch from revision {self.next_revision} is older than the compaction point "
                f"{compact_revision}",
                compact_revision,
            )
        reason = str(result.get("cancel_reason") or "no reason given")
        if "permission denied" in reason:
            raise AuthFailed(f"etcd canceled the watch: {reason}")
        if "invalid auth token" in reason:  # the member restarted, or the token timed out
            self._gateway.forget_token()
        raise StreamEnded(f"canceled by etcd: {reason}")
