"""The sidecar's etcd lease, kept alive, and the clock that says how long we may act on it.

One lease per session. Everything this node owns in etcd (its member key, its election key)
hangs on it, so when etcd expires the lease all of it disappears at once: that is how a crashed
node leaves the cluster without anyone deleting anything.

The validity clock follows the design's timing model: after each successful keepalive the lease
is good until `t_send + granted TTL` on our monotonic clock, where `t_send` is when we *sent*
the keepalive (etcd reset the lease no earlier than that). etcd cannot expire the lease before
that instant, so a leader that stops claiming a margin before it never overlaps its successor.

A lease alone proves nothing about us, though (rule 21: anyone may renew it), so each renewal
also proves we are alive by rewriting our own keys (`prove`, see `sidecar.proof`), and the
clock advances only when both went through, and never by more than the TTL we asked for and
declared to the others: they may depose us that long after our last proof.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sidecar.deadline import within
from sidecar.store.base import Store
from sidecar.store.errors import LeaseNotFound, StoreError
from sidecar.store.model import Lease

log = logging.getLogger(__name__)

PROOF_RETRY_S = 0.2  # after a refused proof: a deposal of another node we had not seen yet
RETRY_S = 0.25  # after a failed renewal
MIN_CALL_S = 0.5  # the shortest deadline a renewal gets, even once the validity ran out


class Session:
    """A granted lease and its keepalive loop.

    `lost` is set once etcd says the lease is gone; a lost session is never revived (safety
    rule 5): the owner opens a new one and registers again.
    """

    def __init__(
        self,
        store: Store,
        lease: Lease,
        valid_until: float,
        on_keepalive: Callable[[float], None] = lambda latency_s: None,
        *,
        declared_ttl: int | None = None,
        prove: Callable[[Session], Awaitable[bool]] | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.valid_until = valid_until
        self.lost = asyncio.Event()
        self._on_keepalive = on_keepalive
        self.declared_ttl = min(lease.ttl, declared_ttl or lease.ttl)
        self._prove = prove
        self.unproven = 0  # renewals in a row whose proof etcd refused

    @classmethod
    async def open(
        cls,
        store: Store,
        ttl_s: int,
        *,
        on_keepalive: Callable[[float], None] = lambda latency_s: None,
        declared_ttl: int | None = None,
        prove: Callable[[Session], Awaitable[bool]] | None = None,
    ) -> Session:
        """Grant a lease. Its TTL is what etcd granted (rule 4), which may exceed `ttl_s`.
        `on_keepalive(latency_s)` is called after every successful renewal. `declared_ttl`:
        the proof of life our record declares, which caps the validity clock. `prove(session)`:
        rewrites our keys after each keepalive (True when etcd took every write)."""
        sent = time.monotonic()
        lease = await store.lease_grant(ttl_s)
        declared = min(lease.ttl, declared_ttl or lease.ttl)
        return cls(store, lease, sent + declared, on_keepalive, declared_ttl=declared, prove=prove)

    @property
    def lease_id(self) -> int:
        return self.lease.id

    def remaining(self, now: float | None = None) -> float:
        """Seconds until etcd could expire the lease, by our clock (negative once past)."""
        return self.valid_until - (time.monotonic() if now is None else now)

    async def keepalive(self) -> bool:
        """Renew once, then prove we are alive; whether the validity clock advanced. Raises
        `LeaseNotFound` (and marks the session lost) or `StoreError`."""
        sent = time.monotonic()
        try:
            ttl = await self.store.lease_keepalive(self.lease.id)
        except LeaseNotFound:
            self.lost.set()
            raise
        self._on_keepalive(time.monotonic() - sent)
        if self._prove is not None and not await self._prove(self):
            self.unproven += 1
            return False
        self.unproven = 0
        self.valid_until = max(self.valid_until, sent + min(ttl, self.declared_ttl))
        return True

    async def run_keepalives(self) -> None:
        """Renew every TTL/3 until the lease is lost; failures retry soon, never give up.

        Each renewal must end while the lease may still live (its deadline is the validity
        left, never less than `MIN_CALL_S`), and goes to two etcd members at once, so one slow
        or paused member costs nothing. One that fails (no endpoint answered: an etcd leader
        election takes 1-2 s) is retried every `RETRY_S`: one lost keepalive must never cost
        the leadership, and the validity clock keeps counting down meanwhile, so a leader that
        cannot renew stops claiming in time anyway.
        """
        period = self.declared_ttl / 3
        failures = 0
        while not self.lost.is_set():
            last_sent = self.valid_until - self.declared_ttl
            delay = max(0.0, period - (time.monotonic() - last_sent))
            await asyncio.sleep(delay)
            try:
                with within(max(MIN_CALL_S, self.remaining())):
                    renewed = await self.keepalive()
                if not renewed:
                    await asyncio.sleep(PROOF_RETRY_S)  # the view catches up, the owner heals
                    continue
            except LeaseNotFound:
                log.warning(
                    "lease %x is gone (expired or revoked)",
                    self.lease.id,
                    extra={"event": "lease_lost", "lease": f"{self.lease.id:x}"},
                )
                return
            except StoreError as e:
                failures += 1
                if failures == 1:  # once per outage; retries follow every RETRY_S
                    log.warning("keepalive of lease %x failed: %s", self.lease.id, e)
                await asyncio.sleep(min(RETRY_S, self.declared_ttl / 6))
                continue
            if failures:
                log.info(
                    "keepalive of lease %x went through after %d failures", self.lease.id, failures
                )
                failures = 0

    async def revoke(self) -> None:
        """End the lease now (best effort): our keys vanish at once instead of after the TTL."""
        self.lost.set()
        try:
            await self.store.lease_revoke(self.lease.id)
        except LeaseNotFound:
            pass
        except StoreError as e:
            log.warning("could not revoke lease %x: %s", self.lease.id, e)
