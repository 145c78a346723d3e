"""The store's exceptions: one root, few subclasses, raised at the boundary.

Two outcomes, two channels: losing a race (a transaction whose compare failed) is a normal
result (`TxnResult.succeeded is False`); only a store that cannot answer, or answers with
something we cannot trust, raises. No aiohttp exception ever leaves the store package.
"""

from __future__ import annotations

from sidecar.errors import RingsideError


class StoreError(RingsideError):
    """Root of every error the store raises."""


class StoreUnavailable(StoreError):
    """No endpoint answered in time, or every endpoint that answered had no quorum.

    The request may or may not have been applied: a write that timed out can still commit.
    Callers make their writes safe to repeat (a transaction that checks its own lease).
    """


class Compacted(StoreError):
    """The requested revision is older than the store's compaction point.

    A watcher that sees this has lost history: it must reload the whole prefix and watch on
    from the revision of that reload. `compact_revision` is the oldest revision still kept
    when the store says it (etcd says it to watches, not to reads); 0 when unknown.
    """

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class FutureRevision(StoreError):
    """A read asked for a revision the store has not reached yet."""


class LeaseNotFound(StoreError):
    """The lease expired or was revoked; keys attached to it are gone."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} not found (expired or revoked)")
        self.lease_id = lease_id


class AuthFailed(StoreError):
    """The credentials were refused, or the user lacks permission for the request."""


class InvalidRequest(StoreError):
    """The store refused the request itself (bad key range, too many ops, bad TTL)."""


class ProtocolError(StoreError):
    """The store's answer could not be understood (not JSON, missing fields, wrong types).

    Seen when an endpoint is not etcd at all, or a proxy in between answers instead.
    """
