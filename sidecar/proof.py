"""Proof of life: a candidate is alive while it rewrites its own key, not while its lease lives.

etcd renews a lease for anyone who names it (keepalives skip Raft and RBAC), and lets a node
grant itself a lease of any length, so a living lease proves nothing about its holder (design
rule 21). What only the holder can do is write its own keys: RBAC grants `election/<node_id>`
to that node alone. So (decision 0022):

- renew = txn [our candidate key was created at our epoch, is on our lease, and nothing under
  `deposals/` was written after the newest deposal we have seen] then put the key again, same
  value and lease: a new `mod_revision`, the proof. It goes out with every keepalive, and the
  validity clock advances only when both succeed, from the instant they were sent;
- every candidate notes when it first saw each rival key's current `mod_revision`
  (`Sightings`, on its monotonic clock). A key not rewritten for its holder's declared
  `proof_ttl` is stale;
- depose = txn [the stale key still has that create and mod revision] then put
  `deposals/<us>/<them>` = `{epoch, proof}`. Every view ignores a candidacy that a deposal
  names at its current `mod_revision`.

Why no leader can be deposed while it claims: its last proof was sent at `t` and it claims
until `t + proof_ttl - margin`. A deposer saw that proof no earlier than `t` and deposes no
earlier than `proof_ttl` after seeing it, so past the leader's last claim by `margin`; and a
proof sent in between changes the key's `mod_revision`, so the deposal transaction fails.
A proof that lands after a deposal fails too, because the deposal key is newer than the
newest the leader had seen. Only the holder can prove, so only a holder that stopped proving
can be deposed; keepalives from anyone else change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field

from sidecar.election import Campaign
from sidecar.keys import Keys
from sidecar.membership import MemberKey
from sidecar.session import Session
from sidecar.sightings import FirstSeen
from sidecar.store.base import Store
from sidecar.store.errors import AuthFailed, StoreError
from sidecar.store.model import Compare, Put
from sidecar.view import Candidate, ClusterView

log = logging.getLogger(__name__)


async def renew(store: Store, keys: Keys, ours: Campaign, node_id: str, view: ClusterView) -> bool:
    """Prove we are alive: rewrite our candidate key, only while it is still ours and no
    deposal we have not seen was written. False when etcd refused (the loop finds out why)."""
    result = await store.txn(
        [
            Compare.created_at(ours.key, ours.epoch),
            Compare.lease_is(ours.key, ours.lease),
            Compare.none_written_after(keys.deposals, view.deposals_revision),
        ],
        [Put(ours.key, node_id.encode(), ours.lease)],
        hedged=True,
    )
    return result.succeeded


async def depose(store: Store, keys: Keys, ours: Campaign, node_id: str, stale: Candidate) -> bool:
    """Record that `stale` stopped proving it is alive, in one transaction with the proof
    that it did: its key unchanged since the revision we timed, and our own candidacy intact.
    False when either changed (it proved itself meanwhile, or we are no candidate)."""
    record = json.dumps({"epoch": stale.create_revision, "proof": stale.mod_revision})
    result = await store.txn(
        [
            Compare.created_at(stale.key, stale.create_revision),
            Compare.modified_at(stale.key, stale.mod_revision),
            Compare.created_at(ours.key, ours.epoch),
            Compare.lease_is(ours.key, ours.lease),
        ],
        [Put(keys.deposal(node_id, stale.node_id), record.encode())],
    )
    return result.succeeded


@dataclass
class Sightings:
    """How long each rival candidate has gone without proving it is alive, by our clock."""

    first_seen: FirstSeen = field(default_factory=FirstSeen)

    def observe(self, view: ClusterView, now: float) -> None:
        """Note the keys of `view` (every new view, reloads included)."""
        self.first_seen.update({c.key: c.mod_revision for c in view.candidates}, now)

    def silent_for(self, candidate: Candidate, now: float) -> float:
        """Seconds since `candidate`'s key last changed, as far as we saw; 0 if unseen."""
        return self.first_seen.silent_for(candidate.key, candidate.mod_revision, now)

    def stale(self, view: ClusterView, ours: Campaign, now: float) -> list[Candidate]:
        """The candidates ahead of `ours` that have not proved they are alive within the
        proof of life their record declares (0, an older sidecar: only its lease counts)."""
        found = []
        for candidate in view.electable:
            if candidate.create_revision >= ours.epoch:
                break
            member = view.member_keys.get(candidate.node_id)
            record = member.record if member is not None else None
            proof_ttl = record.proof_ttl if record is not None else 0
            if proof_ttl and self.silent_for(candidate, now) > proof_ttl:
                found.append(candidate)
        return found


class ProofOfLife:
    """This node's side of proof of life: it proves itself with every keepalive (`prove`)
    and deposes the rivals ahead of it that stopped proving (`depose_stale`).

    The agent hands it the session, candidacy and view it holds; it keeps only the
    sightings and what it last deposed, so the rule can be tested with an injected clock.
    """

    def __init__(self, store: Store, keys: Keys, node_id: str, member: MemberKey) -> None:
        self.store = store
        self.keys = keys
        self.node_id = node_id
        self.member = member
        self.sightings = Sightings()
        self.deposed = 0  # candidacies this node deposed, for metrics and tests
        self._refused = 0  # the epoch whose deposal etcd last refused us (logged once)

    def observe(self, view: ClusterView, now: float) -> None:
        self.sightings.observe(view, now)

    async def prove(self, session: Session, ours: Campaign | None, view: ClusterView) -> bool:
        """Rewrite our member key, and our candidate key while we stand; True when every
        write went through. A candidacy that a deposal names is never renewed: its epoch is
        over (the loop campaigns afresh), and renewing it would undo the deposal."""
        member = self.member.refresh(session)
        if ours is None or ours.lease != session.lease_id:
            return await member
        if any(d.epoch == ours.epoch for d in view.deposals.values()):
            await member
            return False
        proved = await asyncio.gather(
            member, renew(self.store, self.keys, ours, self.node_id, view)
        )
        return all(proved)

    async def depose_stale(
        self, ours: Campaign | None, view: ClusterView, now: float
    ) -> str | None:
        """Depose each candidate ahead of us that has not proved itself in time; a sentence
        when one was deposed, else None."""
        if ours is None or not view.synced:
            return None
        done = []
        for stale in self.sightings.stale(view, ours, now):
            silent = self.sightings.silent_for(stale, now)
            try:
                done_now = await depose(self.store, self.keys, ours, self.node_id, stale)
            except AuthFailed as e:  # a role from before deposals: `ringside auth add` fixes it
                if self._refused != stale.create_revision:
                    self._refused = stale.create_revision
                    log.error(
                        "cannot depose %s, silent for %.1f s: %s (run `ringside auth add` for "
                        "this node: its etcd role predates deposals)",
                        stale.node_id, silent, e, extra={"event": "depose_refused"},
                    )  # fmt: skip
                return f"cannot depose {stale.node_id}, silent for {silent:.1f} s: {e}"
            if done_now:
                self.deposed += 1
                log.warning(
                    "deposed %s (epoch %d): its key was not rewritten for %.1f s, longer than "
                    "its proof of life; its lease alone does not count",
                    stale.node_id, stale.create_revision, silent,
                    extra={"event": "deposed", "target": stale.node_id},
                )  # fmt: skip
                done.append(f"{stale.node_id} (epoch {stale.create_revision})")
        return f"deposed {', '.join(done)}: no proof of life" if done else None

    async def forget(self, view: ClusterView) -> None:
        """Delete our deposals that name a candidacy no longer in etcd (its epoch can never
        come back), so they do not pile up; best effort."""
        epochs = {c.create_revision for c in view.candidates}
        for key, deposal in view.deposals.items():
            if deposal.by == self.node_id and deposal.epoch not in epochs:
                with contextlib.suppress(StoreError):
                    await self.store.delete(key)
