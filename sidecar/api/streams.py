"""A cap of their own for the routes that hold a connection open: event streams and long polls.

Measured before (issue 21): the local API accepts at most `serving.MAX_CONNECTIONS` (256)
connections at once, and a connection busy with a complete request is never evicted. 300
local `/v1/events` clients, or 300 `/ready?wait=300`, therefore held every slot for as long
as they liked, and `/health`, `/ready` and `/v1/fence` were refused outright. So the routes
that hold a connection (`/v1/events`; `/ready?wait=` while it waits; `/v1/history`, which
waits on etcd up to its deadline) share `MAX_STREAMS` slots, far fewer than the connection
cap: the remaining connections are always there for the short routes, which answer from
memory at once. Over the cap a newcomer is answered 429 at once, with a one-line JSON error
and `Retry-After`, and its connection is closed so that it frees its place too.

    slots = StreamSlots(limit=64)
    if not slots.take():
        return slots.refusal()
    try:
        ...  # stream, or wait
    finally:
        slots.give_back()
"""

from __future__ import annotations

from aiohttp import web

MAX_STREAMS = 64  # of serving.MAX_CONNECTIONS (256): 192 stay for the short routes
RETRY_AFTER_S = 5


class StreamSlots:
    """How many streams and long polls are open (`held`), the most allowed (`limit`), and
    how many were refused so far (`refused`, for logs and tests)."""

    def __init__(self, limit: int = MAX_STREAMS, retry_after_s: int = RETRY_AFTER_S) -> None:
        if limit < 1:
            raise ValueError(f"the stream limit must be at least 1, not {limit}")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.held = 0
        self.refused = 0

    def take(self) -> bool:
        """Take a slot if one is free; False (and counted) when all `limit` are held. A slot
        taken must be given back exactly once (`give_back`, in a `finally`)."""
        if self.held >= self.limit:
            self.refused += 1
            return False
        self.held += 1
        return True

    def give_back(self) -> None:
        self.held -= 1

    def refusal(self) -> web.Response:
        """429 with `Retry-After` and a one-line JSON error; the connection is closed after
        it, so that a refused client does not keep a connection slot by keep-alive."""
        response = web.json_response(
            {
                "error": f"too many event streams and long polls open (limit {self.limit}); "
                f"try again in {self.retry_after_s} s",
                "limit": self.limit,
            },
            status=429,
            headers={"Retry-After": str(self.retry_after_s)},
        )
        response.force_close()
        return response
