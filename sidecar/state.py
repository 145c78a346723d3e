"""The agent's read model: one frozen look at everything a sidecar knows, taken at one instant.

The local API, `/ready` and the metrics collector read a `NodeState` and nothing else: each
of their answers is a pure function of one (see `sidecar.api.bodies` and `sidecar.metrics`),
so no two fields of one answer can come from two different moments, and none of them needs to
know how the agent keeps its state. `Agent.state()` builds one; building it decides leadership
then and there, which counts as an answer given (rule 5), exactly as `Agent.leadership()` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.election import Leadership
from sidecar.handover import LeaderChange
from sidecar.preference import Standing
from sidecar.quorum import QuorumHealth
from sidecar.records import OrchestratorHealth
from sidecar.store.model import StoreStats
from sidecar.view import ClusterView, Switchover


@dataclass(frozen=True)
class LeaseState:
    """Our session's lease: its id, TTL, and the seconds left by our clock (rule 3)."""

    id: int
    ttl: int
    remaining_s: float


@dataclass(frozen=True)
class NodeState:
    """What one sidecar knows, as of one instant.

    `leadership` was decided when this state was taken. `lease` is None without a session;
    `registered` says whether that lease is still valid by the validity clock (rule 11).
    `conflict` is set while another live lease holds our node id; `retiring` while an old
    leader key of ours is kept until the validity we reported runs out; `stopping` once
    SIGTERM arrived. `confirmed_age_s` is the time since etcd last answered through a quorum
    (None before the first answer). `orchestrator` is this node's own check of its
    orchestrator (None when no health URL is configured); `last_cycle` is the control loop's
    last sentence. `health_handovers` counts the times this node handed over for its
    orchestrator's sake; `leadership_note` says why it leads with its orchestrator down
    (decision 0015). `switchover` is a request pending for the current epoch (decision 0016),
    `preferred` where the preferred leader stands (decision 0017), `last_change` the latest
    change of leader this sidecar saw, and why (`sidecar.handover`).
    """

    cluster: str
    node_id: str
    leadership: Leadership
    view: ClusterView
    quorum: QuorumHealth
    lease: LeaseState | None
    registered: bool
    history_violation: str | None
    conflict: str | None
    retiring: bool
    stopping: bool
    confirmed_age_s: float | None
    orchestrator: OrchestratorHealth | None
    store: StoreStats
    last_cycle: str
    health_handovers: int = 0
    leadership_note: str | None = None
    switchover: Switchover | None = None
    preferred: Standing | None = None
    last_change: LeaderChange | None = None
