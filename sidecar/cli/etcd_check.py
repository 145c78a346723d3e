"""Is etcd there for this node: which endpoints answer, who leads Raft, is there a quorum.

"quorum ok" used to be printed as true whatever the number of live voters. Here it means one
thing: a linearizable read went through, which etcd only serves with a majority of voters
behind it. Each endpoint is asked for its own status as well, so an operator sees which
addresses this node can reach (a voter's public address may work where its tailnet one does
not, or the other way round). The Raft leader is named by the daemon's own quorum check
(`sidecar.quorum`): the leader most healthy voters follow, learners not counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sidecar.quorum import EndpointAnswer, QuorumHealth, ask_status, check_quorum
from sidecar.store.base import Store
from sidecar.store.errors import StoreError
from sidecar.store.model import StoreMember


@dataclass(frozen=True)
class EtcdHealth:
    """One look at etcd from this node. `quorum_ok` is a linearizable read that succeeded."""

    endpoints: tuple[EndpointAnswer, ...]
    quorum_ok: bool
    revision: int | None
    members: tuple[StoreMember, ...]
    error: str | None
    voters: QuorumHealth  # the daemon's own quorum check: voters, learners aside, and leader

    @property
    def raft_leader(self) -> str | None:
        """The Raft leader by the quorum check's rule (most healthy voters follow it); None
        without quorum, where what a lone member still believes about the leader is stale."""
        return self.voters.etcd_leader if self.quorum_ok else None

    def member_name(self, member_id: int) -> str:
        return next((m.name for m in self.members if m.id == member_id), f"{member_id:x}")


async def check_etcd(store: Store, endpoints: Sequence[str], probe_key: str) -> EtcdHealth:
    """Ask every endpoint for its status, list the members and read `probe_key`
    linearizably, all at once: on a sick cluster each of them may cost a request deadline."""

    async def members() -> tuple[StoreMember, ...]:
        try:
            return tuple(sorted(await store.members(), key=lambda m: m.name))
        except StoreError:
            return ()  # names fall back to member ids

    async def read() -> tuple[int | None, str | None]:
        try:
            return (await store.get(probe_key, prefix=True)).revision, None
        except StoreError as e:
            return None, str(e)

    reports, found, (revision, error), voters = await asyncio.gather(
        asyncio.gather(*(ask_status(store, url, probe_key) for url in endpoints)),
        members(),
        read(),
        check_quorum(store, probe_key=probe_key),
    )
    return EtcdHealth(tuple(reports), error is None, revision, found, error, voters)
