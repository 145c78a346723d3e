"""The etcd key layout, derived from one prefix: `/ringside/<cluster>/`.

| key                          | value              | lease             |
|------------------------------|--------------------|-------------------|
| `members/<node_id>`          | JSON member record | the sidecar's     |
| `election/<lease id in hex>` | node id            | the same lease    |

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

    def member(self, node_id: str) -> str:
        return self.members + node_id

    def candidate(self, lease_id: int) -> str:
        return self.election + f"{lease_id:x}"
