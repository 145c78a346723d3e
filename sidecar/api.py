"""The local HTTP API the orchestrator reads (127.0.0.1:8776 by default).

Every answer comes from the agent's in-memory state: the current `ClusterView`, the latest
quorum check and the leadership decided at the moment of the request. Nothing here asks etcd,
so the API stays fast and keeps answering while etcd is unreachable (and says so).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from sidecar.agent import Agent

AGENT: web.AppKey[Agent] = web.AppKey("agent", Agent)
STARTED: web.AppKey[float] = web.AppKey("started", float)


def _leader_document(agent: Agent) -> dict[str, Any]:
    now = agent.leadership()
    document: dict[str, Any] = {
        "leader": now.leader,
        "epoch": now.epoch,
        "is_self": now.is_leader,
        "reason": now.reason,
    }
    if now.is_leader:
        document["valid_for_s"] = round(now.valid_for_s or 0.0, 3)
    return document


def _lease_document(agent: Agent) -> dict[str, Any] | None:
    session = agent.session
    if session is None:
        return None
    return {
        "id": f"{session.lease_id:x}",
        "ttl": session.lease.ttl,
        "remaining_s": round(session.remaining(), 3),
        "keepalive_age_s": round(session.lease.ttl - session.remaining(), 3),
    }


def status_document(agent: Agent) -> dict[str, Any]:
    """The whole picture from this node, for `/v1/status` and `ringside status`."""
    view, health, now = agent.view, agent.health, agent.leadership()
    members = [
        {
            "node_id": m.node_id,
            "addresses": list(m.record.addresses) if m.record else [],
            "labels": m.record.labels if m.record else {},
            "eligible": m.record.eligible if m.record else False,
            "since": m.record.started_at if m.record else None,
            "is_leader": now.leader == m.node_id,
        }
        for m in view.members.values()
    ]
    return {
        "cluster": agent.config.cluster,
        "node_id": agent.node_id,
        "is_leader": now.is_leader,
        "leader": now.leader,
        "epoch": now.epoch,
        "leadership": now.reason,
        "alive": view.alive,
        "members": members,
        "registered": agent.registered,
        "synced": view.synced,
        "quorum_ok": health.quorum_ok,
        "voters": {
            "total": health.voters_total,
            "healthy": health.voters_healthy,
            "etcd_leader": health.etcd_leader,
        },
        "etcd": {
            "connection": health.connection,
            "error": health.error,
            "endpoints": [
                {"url": e.url, "reachable": e.reachable, "error": e.last_error}
                for e in agent.store.endpoint_states()
            ],
        },
        "lease": _lease_document(agent),
        "history_violation": agent.guard.violation,
        "revision": view.revision,
        "last_change": view.changed_at or None,
        "last_cycle": agent.last_cycle,
    }


async def health(request: web.Request) -> web.Response:
    started = request.app[STARTED]
    return web.json_response({"status": "ok", "uptime_s": round(time.monotonic() - started, 3)})


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_document(request.app[AGENT]))


async def leader(request: web.Request) -> web.Response:
    return web.json_response(_leader_document(request.app[AGENT]))


def create_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT] = agent
    app[STARTED] = time.monotonic()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/leader", leader)
    return app
