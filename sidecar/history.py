"""Is etcd still the history we knew? (rule 7)

A restored snapshot or a sidecar pointed at another cluster looks like a healthy etcd, and
a leader acting on it would act on a past that other nodes have moved beyond. So the sidecar
remembers the cluster id and the highest revision it has seen and refuses to lead when
either goes the wrong way.
"""

from __future__ import annotations

from sidecar.store.model import Header


class HistoryGuard:
    """Rule 7: the cluster id and the revision only ever go one way; anything else stops us.

    Feed it the header of every linearizable answer (reads, writes, txns). A follower's
    status or a serializable read may lag another member's by a few revisions, so those
    headers are not for this guard.

    >>> guard = HistoryGuard()
    >>> guard.observe(Header(cluster_id=7, member_id=1, revision=10, raft_term=2)) is None
    True
    >>> guard.observe(Header(cluster_id=7, member_id=2, revision=4, raft_term=2))
    'etcd revision went backwards from 10 to 4: a restored snapshot?'

    A violation is sticky: every later `observe` returns it for as long as this guard lives,
    that is until the sidecar is restarted (the operator's way to accept a restored history,
    see `etcd/OPERATIONS.md`). A snapshot restored with the same peer URLs and cluster token
    keeps the old cluster id, so the revision check is the one that catches it.
    """

    def __init__(self) -> None:
        self._cluster_id: int | None = None
        self._highest_revision = 0
        self._violation: str | None = None

    @property
    def cluster_id(self) -> int | None:
        return self._cluster_id

    @property
    def highest_revision(self) -> int:
        return self._highest_revision

    @property
    def violation(self) -> str | None:
        return self._violation

    def observe(self, header: Header) -> str | None:
        """Check one header: None when it continues the history seen so far, else why not."""
        if self._violation is not None or header.cluster_id == 0:
            return self._violation
        if self._cluster_id is None:
            self._cluster_id = header.cluster_id
        elif header.cluster_id != self._cluster_id:
            self._violation = (
                f"etcd cluster id changed from {self._cluster_id:x} to {header.cluster_id:x}: "
                "a different or restored cluster"
            )
            return self._violation
        if header.revision and header.revision < self._highest_revision:
            self._violation = (
                f"etcd revision went backwards from {self._highest_revision} to "
                f"{header.revision}: a restored snapshot?"
            )
            return self._violation
        self._highest_revision = max(self._highest_revision, header.revision)
        return None
