"""etcd 3.5.28 and later serve `maintenance/status` to root only (the fix for CVE-2026-33413),
so a node's own user is refused it. This machine's etcd (3.4, 3.5.1) still answers everyone:
a proxy in front of a real member refuses the status call exactly as the newer etcd does
(HTTP 403, gRPC code 7) and passes everything else through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from sidecar.store.errors import AuthFailed
from sidecar.store.etcd import EtcdStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.served import served

DENIED = {"error": "etcdserver: permission denied", "code": 7}


REFUSED: list[str] = []  # the status calls the proxy refused, in this test


@pytest.fixture
async def refusing(etcd: LocalEtcdCluster) -> AsyncIterator[str]:
    """The URL of a proxy to the first member that refuses the status call."""
    upstream = etcd.client_urls[0]
    session = aiohttp.ClientSession()
    REFUSED.clear()

    async def forward(request: web.Request) -> web.Response:
        if request.path == "/v3/maintenance/status":
            REFUSED.append(request.path)
            body = {**DENIED, "message": DENIED["error"]}
            return web.json_response(body, status=403)
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization",)}
        async with session.post(
            upstream + request.path, data=await request.read(), headers=headers
        ) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_post("/{path:.*}", forward)
    try:
        async with served(app) as url:
            yield url
    finally:
        await session.close()


async def test_a_refused_status_call_is_answered_by_a_read_through_the_same_member(
    etcd: LocalEtcdCluster, refusing: str
) -> None:
    store = EtcdStore.connect([refusing])
    direct = EtcdStore.connect([etcd.client_urls[0]])
    try:
        with pytest.raises(AuthFailed, match="permission denied"):
            await store.endpoint_status(refusing)
        told = await direct.endpoint_status(etcd.client_urls[0])
        status = await store.endpoint_status(refusing, probe_key="/ringside/probe/")
        again = await store.endpoint_status(refusing, probe_key="/ringside/probe/")
    finally:
        await store.close()
        await direct.close()
    assert status.leader is None  # not told, and not guessed
    assert status.endpoint == refusing
    assert status.header.member_id == told.header.member_id  # the member behind the proxy
    assert status.header.cluster_id == told.header.cluster_id
    assert status.raft_term == told.raft_term
    # Refused once with a probe key, status is not asked of that endpoint at every check.
    assert again.header.member_id == told.header.member_id
    assert len(REFUSED) == 2
