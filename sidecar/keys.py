"""The etcd key layout, derived from one prefix: `/ringside/<cluster>/`.

| key                  | value              | lease             |
|----------------------|--------------------|-------------------|
| `members/<node_id>`  | JSON member record | the sidecar's     |
| `election/<node_id>` | node id            | the same lease    |
| `switchover/<node_id>` | a switchover this node asked for: `{to, epoch}` | the same lease |
| `deposals/<node_id>/<target>` | `{epoch, proof}`: this node deposed `target`'s candidacy | none |

The cluster history lives beside the prefix, in `/ringside-history/<cluster>/<writer>/<revision>-
<kind>-<subject>` (JSON events, no lease), each leader under its own node id, so RBAC can let
each eligible node write its own part only (`sidecar.journal`, decision 0023).

Both keys are named by the node, so etcd's RBAC can let each node write its own two keys and
nothing else (rule 15). ringside 0.1 named the candidate key by its lease
(`election/<lease id in hex>`); such keys are still read, from 0.1 sidecars only, for the time
of a rolling upgrade (decision 0010).

Every module builds keys here, so the layout can be read (and changed) in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names for one cluster.

    >>> Keys("ringrift").member("hetzner-cpu1")
    '/ringside/ringrift/members/hetzner-cpu1'
    """

    cluster: str

    @property
    def prefix(self) -> str:
        return f"/ringside/{self.cluster}/"

    @property
    def members(self) -> str:
        return self.prefix + "members/"

    @property
    def election(self) -> str:
        return self.prefix + "election/"

    @property
    def switchovers(self) -> str:
        return self.prefix + "switchover/"

    @property
    def history(self) -> str:
        """The cluster history (decision 0018): beside the prefix, not under it, so the view
        every sidecar loads and watches does not carry thousands of past events."""
        return f"/ringside-history/{self.cluster}/"

    def history_of(self, writer: str) -> str:
        """The part of the history `writer` records while it leads, and only it may write
        (decision 0023)."""
        return f"{self.history}{writer}/"

    @property
    def deposals(self) -> str:
        """Where candidates record the candidacies they deposed for want of proof of life
        (decision 0022): one key per deposer and target, named by both, so RBAC can let
        each eligible node write under `deposals/<its id>/` only."""
        return self.prefix + "deposals/"

    def deposal(self, deposer: str, target: str) -> str:
        return f"{self.deposals}{deposer}/{target}"

    def member(self, node_id: str) -> str:
        return self.members + node_id

    def switchover(self, node_id: str) -> str:
        """Where `node_id` asks the leader to hand over (decision 0016)."""
        return self.switchovers + node_id

    def candidate(self, node_id: str) -> str:
        return self.election + node_id

    def etcd_user(self, node_id: str) -> str:
        """The etcd user (and role) of a node (rule 15), named by cluster so that clusters can
        share one etcd: `ringside auth` creates it, a sidecar logs in as it by default."""
        return f"ringside-{self.cluster}-{node_id}"

    def lease_named_candidate(self, lease_id: int) -> str:
        """The candidate key of a ringside 0.1 sidecar (layout 1), named by its lease."""
        return self.election + f"{lease_id:x}"
