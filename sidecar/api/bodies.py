"""The JSON bodies the local API serves, each a pure function of one `NodeState`.

Each function takes the agent's read model (`sidecar.state`, taken once per request) and the
inventory when configured, and returns plain JSON data. Nothing here does I/O or reads the
agent itself: every field of one answer comes from the same instant.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sidecar.election import Leadership, reported_validity
from sidecar.inventory import Inventory
from sidecar.quorum import QuorumHealth
from sidecar.state import NodeState
from sidecar.store.model import EndpointState
from sidecar.view import ClusterView, Member

Json = dict[str, Any]


def member_document(member: Member, leader: str | None) -> Json:
    record = member.record
    if record is None:  # a value ringside cannot read: the member counts, nothing else known
        return {
            "node_id": member.node_id, "addresses": [], "labels": {}, "eligible": False,
            "since": None, "is_leader": member.node_id == leader, "version": None,
            "hostname": None, "pid": None, "orchestrator": None,
        }  # fmt: skip
    return {
        "node_id": member.node_id,
        "addresses": list(record.addresses),
        "labels": dict(record.labels),
        "eligible": record.eligible,
        "since": record.started_at or None,
        "is_leader": member.node_id == leader,
        "version": record.version,
        "hostname": record.hostname,
        "pid": record.pid,
        "orchestrator": record.orchestrator.model_dump() if record.orchestrator else None,
    }


def members_document(state: NodeState) -> Json:
    leader = state.leadership.leader
    return {
        "members": [member_document(m, leader) for m in state.view.members.values()],
        "revision": state.view.revision,
    }


def leader_document(state: NodeState) -> Json:
    now = state.leadership
    document: Json = {
        "leader": now.leader,
        "epoch": now.epoch,
        "is_self": now.is_leader,
        "reason": now.reason,
    }
    if now.is_leader:
        document["valid_for_s"] = reported_validity(now.valid_for_s)
    if now.last_known is not None:
        document["last_known"] = now.last_known.document()
    return {**document, **handover_fields(state)}


def handover_fields(state: NodeState) -> Json:
    """Where leadership is going and why it last moved, for `/v1/leader` and `/v1/status`:
    a switchover pending for the current epoch (decision 0016), the preferred leader's
    standing (decision 0017), and the latest leader change with its reason code."""
    request, preferred, change = state.switchover, state.preferred, state.last_change
    return {
        "switchover": None
        if request is None
        else {"by": request.by, "to": request.to, "epoch": request.epoch, "reason": request.reason},
        "preferred_leader": None
        if preferred is None
        else {
            "node_id": preferred.node_id,
            "state": preferred.why,
            "hands_over_in_s": _rounded(preferred.waiting_s),
        },
        "leader_change": None
        if change is None
        else {
            "leader": change.leader,
            "epoch": change.epoch,
            "reason": change.why.code,
            "why": change.why.detail,
            "revision": change.revision,
        },
    }


def readiness(state: NodeState) -> str | None:
    """Why this node is not ready, or None when it is: etcd answered through a quorum within
    the validity budget, the latest quorum check found a quorum, our lease is valid, our
    member key is in the view as we wrote it, and a leader is known. The first reason that
    applies is the one given, so it names the cause, not a symptom.

    A lost quorum makes this node not ready at once, not only once the validity budget is
    spent: `/ready` must never say 200 while `/v1/status` says `quorum_ok: false`, as the
    orchestrator reads the two together (issue 21)."""
    now = state.leadership
    if now.stale or state.stopping:
        return now.reason
    if not state.quorum.quorum_ok:
        return _no_quorum(state.quorum)
    if state.conflict is not None:
        return state.conflict
    if state.retiring:
        return "stepping down: our old leader key stays until the validity we gave runs out"
    if not state.registered:
        if state.lease is None:
            return f"not registered in etcd yet ({state.last_cycle})"
        return "our lease may have lapsed: no keepalive answered within the validity budget"
    view = state.view
    if not view.synced:
        return "cluster view not in sync with etcd"
    mine = view.members.get(state.node_id)
    if mine is None or state.lease is None or mine.lease != state.lease.id:
        return "our member key is missing from etcd or not ours; writing it again"
    if now.leader is None:
        why = f" ({len(view.ignored)} invalid candidate keys ignored)" if view.ignored else ""
        return "no leader known: no valid candidate" + why
    return None


def _no_quorum(health: QuorumHealth) -> str:
    """The readiness reason for a quorum check that found no quorum, e.g. "etcd has no
    quorum: 1 of 3 voters healthy (m2 does not answer: ...)"."""
    detail = (health.error or "").removeprefix("no quorum: ")
    if health.voters_total == 0:
        return f"etcd quorum not confirmed yet: {detail or 'no voters known'}"
    counted = f"{health.voters_healthy} of {health.voters_total} voters healthy"
    return f"etcd has no quorum: {counted}" + (f" ({detail})" if detail else "")


def _lease_document(state: NodeState) -> Json | None:
    lease = state.lease
    if lease is None:
        return None
    return {
        "id": f"{lease.id:x}",
        "ttl": lease.ttl,
        "remaining_s": round(lease.remaining_s, 3),
        "keepalive_age_s": round(lease.ttl - lease.remaining_s, 3),
    }


def cluster_document(
    *,
    cluster: str,
    node_id: str | None,
    now: Leadership,
    view: ClusterView,
    health: QuorumHealth,
    endpoints: Sequence[EndpointState],
    inventory_hosts: Collection[str] | None,
    etcd_error: str | None = None,
    **node_fields: Any,
) -> Json:
    """The status document: what `/v1/status` serves and `ringside status --etcd` builds from
    etcd directly (there with `node_id` None). `node_fields` are the sidecar-only extras."""
    missing = None
    if inventory_hosts is not None and view.synced:
        missing = sorted(set(inventory_hosts) - set(view.members))
    return {
        "cluster": cluster,
        "node_id": node_id,
        "is_leader": now.is_leader,
        "leader": now.leader,
        "epoch": now.epoch,
        "leadership": now.reason,
        "last_known": now.last_known.document() if now.last_known is not None else None,
        "alive": view.alive,
        "members": [member_document(m, now.leader) for m in view.members.values()],
        "synced": view.synced,
        "quorum_ok": health.quorum_ok,
        "voters": {
            "total": health.voters_total,
            "healthy": health.voters_healthy,
            "etcd_leader": health.etcd_leader,
        },
        "etcd": {
            "connection": health.connection,
            "error": etcd_error or health.error,
            "endpoints": [
                {"url": e.url, "reachable": e.reachable, "error": e.last_error} for e in endpoints
            ],
        },
        "revision": view.revision,
        "last_change": view.changed_at or None,
        "inventory_missing": missing,
        "registered": False,
        "lease": None,
        "history_violation": None,
        "ignored_candidates": [{"key": i.key, "reason": i.reason} for i in view.ignored],
        **node_fields,
    }


def status_document(state: NodeState, inventory: Inventory | None = None) -> Json:
    """The whole picture from this node, for `/v1/status` and `ringside status`."""
    document = cluster_document(
        cluster=state.cluster,
        node_id=state.node_id,
        now=state.leadership,
        view=state.view,
        health=state.quorum,
        endpoints=state.store.endpoints,
        inventory_hosts=tuple(inventory.hosts) if inventory else None,
        registered=state.registered,
        lease=_lease_document(state),
        history_violation=state.history_violation,
        last_cycle=state.last_cycle,
        confirmed_age_s=_rounded(state.confirmed_age_s),
    )
    document["health_handovers"] = state.health_handovers
    document["leadership_note"] = state.leadership_note
    return {**document, **handover_fields(state)}


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def orchestrator_status(state: NodeState, inventory: Inventory | None = None) -> Json:
    """The orchestrator's existing `/status` shape, so its monitoring scripts keep working.

    Its conventions, kept on purpose: `alive_peers` counts live peers *excluding* this node;
    `peers` holds live peers only; `all_peers` adds every inventory host, "dead" when it has no
    live lease. Voters are the etcd voters, and `voter_quorum_size` is a real majority.
    """
    view, health, now, node_id = state.view, state.quorum, state.leadership, state.node_id
    peers = {
        peer: member_document(m, now.leader) for peer, m in view.members.items() if peer != node_id
    }
    all_peers: Json = {peer: {**doc, "status": "alive"} for peer, doc in peers.items()}
    for host in sorted(inventory.hosts if inventory else ()):
        if host != node_id and host not in all_peers:
            all_peers[host] = {"node_id": host, "status": "dead"}
    me = view.members.get(node_id)
    effective = now.leader if view.synced and health.quorum_ok else None
    voters = {v.name: v for v in health.voters}
    return {
        "node_id": node_id,
        "role": "leader" if now.is_leader else "follower",
        "leader_id": now.leader,
        "effective_leader_id": effective,
        "is_leader": now.is_leader,
        "epoch": now.epoch,
        "alive_peers": len(peers),
        "peers": peers,
        "all_peers": all_peers,
        "self": member_document(me, now.leader) if me else {"node_id": node_id},
        "voter_node_ids": sorted(voters),
        "voter_quorum_size": health.voters_total // 2 + 1 if health.voters_total else 0,
        "voters_alive": health.voters_healthy,
        "voter_quorum_ok": health.quorum_ok,
        "voter_health": {
            name: {
                "healthy": v.healthy,
                "is_raft_leader": v.is_raft_leader,
                "error": v.error,
            }
            for name, v in sorted(voters.items())
        },
    }
