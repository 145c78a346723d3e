"""How long a key has gone unchanged, by this node's own clock (decision 0022).

A key's `mod_revision` changes each time its holder rewrites it as proof of life. Nothing in
etcd says *when* a revision was written, so each node notes, on its monotonic clock, when it
first saw each key at its current revision; a reload that finds a key unchanged keeps the
first sighting. The election (`sidecar.proof`, candidates) and the member list (`sidecar.view`,
members) both judge silence through one of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class FirstSeen:
    """`update({key: mod_revision}, now)` with every view; `silent_for(key, revision, now)`."""

    _seen: dict[str, tuple[int, float]] = field(default_factory=dict)

    def update(self, revisions: Mapping[str, int], now: float) -> None:
        """Note each key at its revision (a new revision restarts its clock); forget the keys
        that are gone."""
        for key, revision in revisions.items():
            seen = self._seen.get(key)
            if seen is None or seen[0] != revision:
                self._seen[key] = (revision, now)
        for gone in self._seen.keys() - revisions.keys():
            del self._seen[gone]

    def silent_for(self, key: str, revision: int, now: float) -> float:
        """Seconds since `key` was first seen at `revision`; 0 when it was not (yet)."""
        seen = self._seen.get(key)
        return now - seen[1] if seen is not None and seen[0] == revision else 0.0
