"""Shared pieces of the API tests: a running in-process agent and OpenAPI response checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import jsonschema
import pytest

from sidecar.agent import Agent
from sidecar.api import openapi_document
from sidecar.membership import MemberRecord
from sidecar.settings import RingsideConfig
from sidecar.store.base import Store


@asynccontextmanager
async def running_agent(
    store: Store, node_id: str, cluster: str, *, eligible: bool = True, token: str | None = None
) -> AsyncIterator[Agent]:
    config = RingsideConfig.model_validate(
        {
            "cluster": cluster,
            "lease_ttl": 2,
            "leader": {"eligible": eligible, "validity_margin": 0.5},
            "http": {"token": token},
        }
    )
    record = MemberRecord(
        node_id=node_id,
        addresses=("203.0.113.21",),
        labels={"gpu": "none"},
        eligible=eligible,
        version="test",
        pid=1,
        hostname="test",
        started_at="2026-11-27T21:00:00+00:00",
    )
    agent = Agent(config, node_id, store, record, quorum_interval_s=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def until(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within_s} s")
        await asyncio.sleep(0.02)


@cache
def _document() -> dict[str, Any]:
    return openapi_document()


def response_schema(path: str, method: str, status: int) -> dict[str, Any] | None:
    """The JSON schema the OpenAPI document gives for this response (None: not JSON)."""
    document = _document()
    operation = document["paths"][path][method.lower()]
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {path} answered {status}, not documented"
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        response = document["components"]["responses"][name]
    content = response["content"]
    if "application/json" not in content:
        return None
    return {**content["application/json"]["schema"], "components": document["components"]}


def assert_documented(path: str, method: str, status: int, body: Any) -> None:
    """Fail unless `body` matches what the OpenAPI document promises for this answer."""
    schema = response_schema(path, method, status)
    if schema is not None:
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
