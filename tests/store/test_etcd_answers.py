"""Answers that are not what etcd should say: a proxy's HTML page, garbage, wrong shapes.

A real HTTP server on loopback plays the misbehaving endpoint. Whatever it sends, the client
either moves on to the next endpoint or raises one of the store's own exceptions with a
message naming the problem; no aiohttp or JSON exception reaches the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.store.errors import InvalidRequest, ProtocolError, StoreUnavailable
from sidecar.store.etcd import EtcdStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.reads import get_one

ServerFactory = Callable[..., Awaitable[TestServer]]
HEADER = {"cluster_id": "1", "member_id": "2", "revision": "7", "raft_term": "3"}


async def fake_endpoint(aiohttp_server: ServerFactory, answer: web.Response) -> str:
    async def handler(request: web.Request) -> web.Response:
        return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


def json_answer(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def test_a_proxy_page_is_skipped_for_the_next_endpoint(
    aiohttp_server: ServerFactory, etcd_cluster: LocalEtcdCluster
) -> None:
    html = web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
    fake = await fake_endpoint(aiohttp_server, html)
    store = EtcdStore.connect([fake, *etcd_cluster.client_urls])
    try:
        await store.put("/answers/proxy", b"ok")
        kv = await get_one(store, "/answers/proxy")
        assert kv is not None
        assert kv.value == b"ok"
        first = store.endpoint_states()[0]
        assert first.reachable is False
        assert first.last_error is not None
        assert "not etcd JSON" in first.last_error
    finally:
        await store.close()


async def test_only_bad_endpoints_is_unavailable_with_the_reason(
    aiohttp_server: ServerFactory,
) -> None:
    fake = await fake_endpoint(aiohttp_server, web.Response(text="hello"))
    store = EtcdStore.connect([fake])
    try:
        with pytest.raises(StoreUnavailable, match="not etcd JSON"):
            await store.get("/x")
    finally:
        await store.close()


async def test_no_leader_answer_moves_on(aiohttp_server: ServerFactory) -> None:
    unavailable = json_answer(
        {"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14}, 503
    )
    healthy = json_answer({"header": HEADER, "kvs": [], "count": "0"})
    first = await fake_endpoint(aiohttp_server, unavailable)
    second = await fake_endpoint(aiohttp_server, healthy)
    store = EtcdStore.connect([first, second])
    try:
        result = await store.get("/x")
        assert result.revision == 7
        assert store.endpoint_states()[0].last_error == "etcdserver: no leader"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([1, 2, 3], "not an object"),
        ({"header": HEADER, "kvs": "nope"}, "kvs"),
        ({"header": {"revision": "seven"}}, "revision"),
        ({"header": HEADER, "kvs": [{"key": "%%%"}]}, "base64"),
        ({"header": "x"}, "header"),
    ],
)
async def test_malformed_answers_are_protocol_errors(
    aiohttp_server: ServerFactory, body: Any, complaint: str
) -> None:
    store = EtcdStore.connect([await fake_endpoint(aiohttp_server, json_answer(body))])
    try:
        with pytest.raises(ProtocolError, match=complaint):
            await store.get("/x")
    finally:
        await store.close()


async def test_a_refusal_is_not_retried_elsewhere(aiohttp_server: ServerFactory) -> None:
    """etcd saying "no" to the request itself is an answer, not an endpoint failure."""
    refusal = json_answer({"error": "too many operations", "message": "too many ops", "code": 3})
    store = EtcdStore.connect([await fake_endpoint(aiohttp_server, refusal)])
    try:
        with pytest.raises(InvalidRequest, match="too many ops"):
            await store.get("/x")
        assert store.endpoint_states()[0].reachable is True
    finally:
        await store.close()


async def test_a_member_list_with_a_bad_learner_flag_is_a_protocol_error(
    aiohttp_server: ServerFactory,
) -> None:
    """A learner flag we cannot read must not quietly turn a learner into a voter."""
    body = {"header": HEADER, "members": [{"ID": "5", "name": "m5", "isLearner": "yes"}]}
    store = EtcdStore.connect([await fake_endpoint(aiohttp_server, json_answer(body))])
    try:
        with pytest.raises(ProtocolError, match="isLearner='yes', not a boolean"):
            await store.members()
    finally:
        await store.close()
