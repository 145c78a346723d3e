"""Helpers for the etcd-trouble scenarios (`tests/test_etcd_trouble*.py`).

- ringside's keys read straight from etcd, found by what they hold (a candidate key is found by
  its value, the node id, whatever the key is named);
- HTTP answers with their status code, a `/v1/events` reader and a poller that remembers every
  leader any sidecar named;
- `Findings`: a scenario checks everything it promised and fails once, listing every broken
  promise in the words of what an operator would have seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from sidecar.store.base import Store
from sidecar.store.model import KeyValue
from sidecar.testing.localcluster import LocalClusterError, LocalEtcdCluster
from tests.blackhole import Route
from tests.fleet import Fleet, Sidecar

HTTP_TIMEOUT_S = 2.0
Answer = tuple[float, str, object, object]  # when received, who answered, leader, epoch


def via(route: Route) -> dict[str, str]:
    """The environment that makes a sidecar reach etcd through `route` only."""
    return {"RINGSIDE_ETCD_ENDPOINTS": ",".join(route.urls)}


def member_key(fleet: Fleet, node_id: str) -> str:
    return f"/ringside/{fleet.cluster}/members/{node_id}"


def election_prefix(fleet: Fleet) -> str:
    return f"/ringside/{fleet.cluster}/election/"


async def candidates(store: Store, fleet: Fleet) -> tuple[KeyValue, ...]:
    return (await store.get(election_prefix(fleet), prefix=True)).kvs


async def candidates_of(store: Store, fleet: Fleet, node_id: str) -> list[KeyValue]:
    """The candidate keys whose value is `node_id`, oldest first."""
    found = [kv for kv in await candidates(store, fleet) if kv.value == node_id.encode()]
    return sorted(found, key=lambda kv: kv.create_revision)


def record_of(kv: KeyValue | None) -> dict[str, Any]:
    """A member key's JSON record ({} when the key is missing or holds no JSON object)."""
    if kv is None:
        return {}
    try:
        record = json.loads(kv.value)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def forged_record(node_id: str, *, hostname: str = "evil", pid: int = 1) -> bytes:
    """A well-formed member record that no sidecar wrote."""
    return json.dumps(
        {
            "node_id": node_id,
            "addresses": ["203.0.113.66"],
            "labels": {},
            "eligible": True,
            "version": "0.0.0",
            "pid": pid,
            "hostname": hostname,
            "started_at": "2020-01-01T00:00:00+00:00",
        }
    ).encode()


async def http_get(url: str, *, timeout_s: float = HTTP_TIMEOUT_S) -> tuple[int, Any]:
    """One GET: the status and the body (parsed JSON, else text); (0, why) without an answer."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        return 0, f"no answer: {e!r}"


async def lease_of(sidecar: Sidecar) -> int | None:
    """The sidecar's current lease id, from its `/v1/status` (None without one)."""
    code, status = await http_get(sidecar.url + "/v1/status")
    lease = status.get("lease") if code == 200 and isinstance(status, dict) else None
    if not isinstance(lease, dict) or not isinstance(lease.get("id"), str):
        return None
    return int(lease["id"], 16)


async def keepalive_age(sidecar: Sidecar) -> float | None:
    code, status = await http_get(sidecar.url + "/v1/status")
    lease = status.get("lease") if code == 200 and isinstance(status, dict) else None
    age = lease.get("keepalive_age_s") if isinstance(lease, dict) else None
    return float(age) if isinstance(age, int | float) else None


def metric_total(text: object, name: str) -> float | None:
    """The sum of every sample of metric `name` (or `name_total`, a counter's sample) in a
    Prometheus exposition; None when there is none."""
    if not isinstance(text, str):
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        sample = line.split("{", 1)[0].split(" ", 1)[0]
        if sample in (name, name + "_total"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


async def eventually(
    predicate: Callable[[], Awaitable[bool]], within_s: float, *, interval_s: float = 0.05
) -> float | None:
    """Poll `predicate` until it holds: the seconds that took, or None if it never did."""
    started = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - started
        if time.monotonic() - started > within_s:
            return None
        await asyncio.sleep(interval_s)


async def exit_code(sidecar: Sidecar, within_s: float) -> int | None:
    """Wait (without blocking the event loop) for the process to end; None if it did not."""
    try:
        return await asyncio.to_thread(sidecar.wait_exit, within_s)
    except subprocess.TimeoutExpired:
        return None


async def converged(
    fleet: Fleet, members: Iterable[str], *, within_s: float, leader_among: Iterable[str]
) -> dict[str, Any] | str:
    """`Fleet.wait_converged`, with its failure as a short sentence instead of a failed test."""
    expected = sorted(members)
    try:
        return await fleet.wait_converged(expected, within_s=within_s, leader_among=leader_among)
    except pytest.fail.Exception:
        return f"not converged on {expected} within {within_s} s; {await views(fleet)}"


async def views(fleet: Fleet) -> str:
    """What each running sidecar says now, in one line each: leader, epoch, why, members."""
    said = []
    for sidecar in fleet.running():
        status = await fleet.get(sidecar, "/v1/status")
        if status is None:
            said.append(f"{sidecar.node_id}: no answer")
            continue
        members = [m.get("node_id") for m in status.get("members", [])]
        said.append(
            f"{sidecar.node_id} says leader {status.get('leader')} epoch {status.get('epoch')}"
            f" ({status.get('leadership')}), members {members}"
        )
    return "; ".join(said)


async def move_raft_leader(etcd: LocalEtcdCluster, within_s: float = 20.0) -> None:
    """Kill the etcd member that is the Raft leader, wait until another one leads, then bring
    the killed one back and wait for a healthy cluster.

    The member is started from the calling (main) thread, so it stays tied to the test run
    and dies with it (see `sidecar.testing.localcluster`: members started from a worker thread
    are not tied at all).
    """
    old = await asyncio.to_thread(etcd.leader)
    await asyncio.to_thread(old.kill)

    async def another_leads() -> bool:
        with contextlib.suppress(LocalClusterError):
            return await asyncio.to_thread(etcd.leader) is not old
        return False

    if await eventually(another_leads, within_s) is None:
        raise LocalClusterError(f"no new etcd leader within {within_s} s of killing {old.name}")
    old.start()
    await asyncio.to_thread(etcd.wait_healthy)


async def heal_etcd(etcd: LocalEtcdCluster) -> None:
    """`LocalEtcdCluster.heal` for stopped members without blocking the loop: started from
    this thread (see `move_raft_leader` for why), waited for in another."""
    for member in etcd.members:
        member.start()
    await asyncio.to_thread(etcd.wait_healthy)


@dataclass
class Findings:
    """Broken promises of one scenario, reported together at the end."""

    scenario: str
    problems: list[str] = field(default_factory=list)

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def verify(self) -> None:
        if self.problems:
            listed = "\n".join(f"- {p}" for p in self.problems)
            pytest.fail(f"{self.scenario}:\n{listed}", pytrace=False)


class EventStream:
    """The server-sent events of one sidecar's `/v1/events`, collected in the background.

    The sidecar subscribes before it sends the response headers, so every event after
    `async with EventStream(url)` has been entered is collected.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventStream:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=HTTP_TIMEOUT_S)
        )
        response = await self._session.get(self.url)
        assert response.status == 200, f"{self.url} answered {response.status}"
        self._task = asyncio.create_task(self._read(response))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        block: list[str] = []
        with contextlib.suppress(aiohttp.ClientError):
            async for raw in response.content:
                line = raw.decode(errors="replace").rstrip("\r\n")
                if line:
                    block.append(line)
                    continue
                data = "\n".join(x[5:].strip() for x in block if x.startswith("data:"))
                block = []
                with contextlib.suppress(ValueError):
                    document = json.loads(data)
                    if isinstance(document, dict):
                        self.events.append(document)

    def find(self, kind: str, **detail: object) -> dict[str, Any] | None:
        """The first event of `kind` whose detail holds every item of `detail`."""
        for event in self.events:
            found = event.get("detail")
            if (
                event.get("kind") == kind
                and isinstance(found, dict)
                and all(found.get(k) == v for k, v in detail.items())
            ):
                return event
        return None

    def kinds(self) -> list[str]:
        return [str(e.get("kind")) for e in self.events]


@dataclass
class LeaderLog:
    """Polls `/v1/leader` on every running sidecar until stopped and keeps every answer:
    (when received, which sidecar answered, the leader it named, the epoch), and in
    `claims` (when, who) each answer in which a sidecar said it leads (`is_self`)."""

    fleet: Fleet
    interval_s: float = 0.05
    answers: list[Answer] = field(default_factory=list)
    claims: list[tuple[float, str, bool]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaderLog:
        self._task = asyncio.create_task(self._poll_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(s) for s in self.fleet.running()))
            await asyncio.sleep(self.interval_s)

    async def _poll(self, sidecar: Sidecar) -> None:
        answer = await self.fleet.get(sidecar, "/v1/leader")
        if answer is not None:
            now = time.monotonic()
            self.answers.append((now, sidecar.node_id, answer.get("leader"), answer.get("epoch")))
            self.claims.append((now, sidecar.node_id, answer.get("is_self") is True))

    def overlapping_claims(self) -> list[str]:
        """Two sidecars that each said "I am the leader" over spans of time that overlap (a
        span: from a sidecar's first such answer to its last before one that was not)."""
        spans: list[tuple[str, float, float]] = []
        open_since: dict[str, tuple[float, float]] = {}
        for when, who, is_self in sorted(self.claims):
            if is_self:
                open_since[who] = (open_since.get(who, (when, when))[0], when)
            elif who in open_since:
                spans.append((who, *open_since.pop(who)))
        spans += [(who, *span) for who, span in open_since.items()]
        return [
            f"{a} claimed {a0:.2f}..{a1:.2f} while {b} claimed {b0:.2f}..{b1:.2f}"
            for i, (a, a0, a1) in enumerate(spans)
            for b, b0, b1 in spans[i + 1 :]
            if a != b and a0 <= b1 and b0 <= a1
        ]

    def naming_others(self, allowed: Iterable[str | None]) -> list[Answer]:
        """The answers that named a leader outside `allowed`."""
        permitted = set(allowed)
        return [a for a in self.answers if a[2] not in permitted]
