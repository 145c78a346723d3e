"""Proof of life (decision 0022): a lease kept alive by someone else keeps nobody leading.

The rule's parts on the in-memory store, and the whole agent with a stranger renewing a
frozen leader's lease: the attack measured in issue 21 (32 s of a dead leader leading).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

from sidecar.election import Campaign
from sidecar.keys import Keys
from sidecar.proof import Sightings, depose, renew
from sidecar.records import MemberRecord
from sidecar.store.errors import StoreUnavailable
from sidecar.store.memory import MemoryStore
from sidecar.view import ClusterView, Rules, ViewKeeper, build_view
from tests.agents import TTL, running_agent, until

KEYS = Keys("proof")


async def stand(store: MemoryStore, node_id: str, *, proof_ttl: int = 5) -> Campaign:
    """A member and its candidacy on a lease of their own, as a sidecar writes them."""
    lease = await store.lease_grant(30)
    record = MemberRecord(node_id=node_id, eligible=True, proof_ttl=proof_ttl)
    await store.put(KEYS.member(node_id), record.encode(), lease=lease.id)
    revision = await store.put(KEYS.candidate(node_id), node_id.encode(), lease=lease.id)
    return Campaign(KEYS.candidate(node_id), lease.id, revision)


async def load(store: MemoryStore, rules: Rules | None = None) -> ClusterView:
    found = await store.get(KEYS.prefix, prefix=True)
    return build_view(KEYS, found.kvs, found.header, rules or Rules())


async def test_a_deposal_at_the_keys_last_proof_makes_it_unelectable() -> None:
    store = MemoryStore()
    a = await stand(store, "node-a")
    b = await stand(store, "node-b")
    view = await load(store)
    assert view.leader is not None
    assert view.leader.node_id == "node-a"
    assert await depose(store, KEYS, b, "node-b", view.leader)
    view = await load(store)
    assert view.leader is not None
    assert view.leader.node_id == "node-b"
    assert view.epoch == b.epoch
    reasons = {i.key: i.reason for i in view.ignored}
    assert "deposed by node-b" in reasons[a.key]


async def test_a_deposal_that_names_another_proof_or_is_junk_deposes_nothing() -> None:
    store = MemoryStore()
    a = await stand(store, "node-a")
    forged = json.dumps({"epoch": a.epoch, "proof": a.epoch + 999}).encode()
    await store.put(KEYS.deposal("node-b", "node-a"), forged)
    for junk in (b"", b"[]", b'{"epoch": true, "proof": 1}', b"x" * 300):
        await store.put(KEYS.deposal("node-c", "node-a"), junk)
        view = await load(store)
        assert view.leader is not None, junk
        assert view.leader.node_id == "node-a", junk
    await store.put(KEYS.deposals + "not a node/node-a", forged)
    assert (await load(store)).leader is not None


async def test_a_proof_of_life_longer_than_the_maximum_counts_for_nothing() -> None:
    """The 9,000,000,000 s lease of issue 21: whatever the lease, a record that declares a
    proof of life longer than the cluster allows is never electable, on every node alike."""
    store = MemoryStore()
    await stand(store, "node-a", proof_ttl=9_000)
    await stand(store, "node-b")
    view = await load(store, Rules(max_ttl_s=60))
    assert view.leader is not None
    assert view.leader.node_id == "node-b"
    assert any("longer than the cluster's maximum" in i.reason for i in view.ignored)


async def test_the_deposal_fails_when_the_holder_proved_itself_meanwhile() -> None:
    store = MemoryStore()
    a = await stand(store, "node-a")
    b = await stand(store, "node-b")
    seen = await load(store)
    assert await renew(store, KEYS, a, "node-a", seen)  # the holder writes: a new proof
    assert seen.leader is not None
    assert not await depose(store, KEYS, b, "node-b", seen.leader), "an old proof was timed"
    assert (await load(store)).deposals == {}


async def test_a_proof_that_lands_after_a_deposal_it_has_not_seen_fails() -> None:
    """The renewal's guard: nothing under `deposals/` newer than what the holder saw. A proof
    sent before the deposal but applied after it must not revive the deposed epoch."""
    store = MemoryStore()
    a = await stand(store, "node-a")
    b = await stand(store, "node-b")
    before = await load(store)
    assert before.leader is not None
    assert await depose(store, KEYS, b, "node-b", before.leader)
    assert not await renew(store, KEYS, a, "node-a", before)
    after = await load(store)
    assert after.leader is not None
    assert after.leader.node_id == "node-b"


def test_a_key_is_stale_once_unchanged_for_its_proof_ttl_by_our_clock() -> None:
    store = MemoryStore()

    async def setup() -> tuple[Campaign, ClusterView]:
        await stand(store, "node-a", proof_ttl=5)
        b = await stand(store, "node-b")
        return b, await load(store)

    b, view = asyncio.run(setup())
    sightings = Sightings()
    sightings.observe(view, now=100.0)
    assert sightings.stale(view, b, now=105.0) == []
    assert [c.node_id for c in sightings.stale(view, b, now=105.1)] == ["node-a"]
    sightings.observe(view, now=200.0)  # a reload: unchanged keys keep their first sighting
    assert [c.node_id for c in sightings.stale(view, b, now=200.0)] == ["node-a"]
    assert sightings.stale(view, Campaign("k", 1, view.electable[0].create_revision), 300) == []


async def test_a_member_that_stops_proving_is_silent_until_it_proves_again() -> None:
    """Members are judged by their proof too: a key kept by someone else's keepalives is not a
    live member. It keeps its key (and its place in the election, which only a deposal ends)."""
    store = MemoryStore()
    clock = [100.0]
    keeper = ViewKeeper(store, KEYS, clock=lambda: clock[0])
    await stand(store, "node-a", proof_ttl=5)
    await stand(store, "node-b", proof_ttl=5)
    keeper._publish(await load(store))  # as a full load does
    clock[0] = 105.0
    keeper.judge_silence()
    assert set(keeper.current.members) == {"node-a", "node-b"}
    member = keeper.current.member_keys["node-b"]
    assert member.record is not None
    await store.put(KEYS.member("node-b"), member.record.encode(), lease=member.lease)
    keeper._publish(await load(store))
    clock[0] = 105.1
    keeper.judge_silence()
    assert set(keeper.current.members) == {"node-b"}, "node-a has not proved itself for 5.1 s"
    assert set(keeper.current.member_keys) == {"node-a", "node-b"}
    assert keeper.current.alive == 1
    assert keeper.current.leader is not None, "silence alone deposes nobody"
    record = keeper.current.member_keys["node-a"]
    assert record.record is not None
    await store.put(KEYS.member("node-a"), record.record.encode(), lease=record.lease)
    keeper._publish(await load(store))
    assert set(keeper.current.members) == {"node-a", "node-b"}, "a new proof speaks at once"


async def test_a_member_declaring_more_than_the_maximum_is_never_live() -> None:
    store = MemoryStore()
    keeper = ViewKeeper(store, KEYS, rules=Rules(max_ttl_s=60))
    await stand(store, "node-a", proof_ttl=9_000)
    found = await store.get(KEYS.prefix, prefix=True)
    keeper._publish(build_view(KEYS, found.kvs, found.header, Rules(max_ttl_s=60)))
    assert keeper.current.members == {}
    assert keeper.current.leader is None


class Freezable:
    """A store seen through a process that can be frozen: while `frozen`, every call hangs
    (SIGSTOP), while etcd itself, and anyone else talking to it, goes on."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.thawed = asyncio.Event()
        self.thawed.set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            await self.thawed.wait()
            return await attribute(*args, **kwargs)

        return call


async def never_both(claims: Callable[[], list[str]], stop: asyncio.Event) -> list[str]:
    """Sample who claims to lead every 10 ms until `stop`; the first overlap seen, if any."""
    while not stop.is_set():
        leaders = claims()
        if len(leaders) > 1:
            return leaders
        await asyncio.sleep(0.01)
    return []


async def keep_alive(store: MemoryStore, lease: int, stop: asyncio.Event) -> None:
    """The stranger of issue 21: renews someone else's lease, as any client may."""
    while not stop.is_set():
        await store.lease_keepalive(lease)
        await asyncio.sleep(0.2)


async def test_a_frozen_leader_whose_lease_a_stranger_renews_is_deposed_in_time() -> None:
    store = MemoryStore()
    frozen = Freezable(store)
    async with (
        running_agent(frozen, "n1", "proof") as n1,  # type: ignore[arg-type]
        running_agent(store, "n2", "proof") as n2,
    ):
        await until(lambda: n1.leadership().is_leader and n2.view.leader is not None)
        await until(lambda: len(n2.view.electable) == 2)
        assert n1.session is not None
        lease, epoch = n1.session.lease_id, n1.leadership().epoch
        stop = asyncio.Event()
        stranger = asyncio.create_task(keep_alive(store, lease, stop))

        def claims() -> list[str]:
            return [a.node_id for a in (n1, n2) if a.leadership().is_leader]

        overlap = asyncio.create_task(never_both(claims, stop))
        frozen.thawed.clear()
        frozen_at = time.monotonic()
        try:
            await until(lambda: n2.leadership().is_leader, within_s=TTL + 1)
            took = time.monotonic() - frozen_at
            assert (await store.lease_time_to_live(lease)).ttl > 0, "the lease still lives"
            assert (n2.leadership().epoch or 0) > (epoch or 0)
            assert n2.liveness.deposed == 1
            assert not n1.leadership().is_leader
            await until(lambda: "n1" not in n2.view.members, within_s=1)
        finally:
            stop.set()
            await stranger
            frozen.thawed.set()
        assert await overlap == [], "two leaders at once"
        assert took <= TTL + 1
        # Thawed, the deposed leader finds its epoch over and stands again behind n2.
        await until(lambda: n1.view.leader is not None and n1.view.leader.node_id == "n2")
        await until(lambda: n1.candidacy is not None and n1.candidacy.epoch > (epoch or 0))
        assert not n1.leadership().is_leader


class Unrenewable:
    """A store whose keepalives fail while `failing` (an etcd leader election, as seen by
    one sidecar), everything else passing through."""

    def __init__(self, inner: MemoryStore) -> None:
        self.inner = inner
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def lease_keepalive(self, lease_id: int) -> int:
        if self.failing:
            raise StoreUnavailable("no etcd endpoint answered: electing a leader")
        return await self.inner.lease_keepalive(lease_id)


async def test_a_leader_whose_renewals_fail_for_a_while_keeps_its_epoch() -> None:
    """Issue 21: an etcd leader election (1-2 s with no renewal) used to move the leadership
    at TTL 5 s. Past its validity the leader claims nothing (suspended, and its fence answers
    503, not 409), then leads again at the same epoch once a renewal proves its key still
    heads the election; nobody else led, no demotion was announced."""
    store = MemoryStore()
    flaky = Unrenewable(store)
    options: dict[str, Any] = {"lease_ttl": 4, "validity_margin": 2.0}
    async with (
        running_agent(flaky, "n1", "proof", **options) as n1,  # type: ignore[arg-type]
        running_agent(store, "n2", "proof", **options) as n2,
    ):
        await until(lambda: n1.leadership().is_leader and len(n2.view.electable) == 2)
        epoch = n1.leadership().epoch
        flaky.failing = True
        await until(lambda: n1.leadership().suspended, within_s=4)
        suspended = n1.leadership()
        assert not suspended.is_leader
        assert f"suspended at epoch {epoch}" in suspended.reason
        assert not n2.leadership().is_leader
        flaky.failing = False
        await until(lambda: n1.leadership().is_leader, within_s=3)
        assert n1.leadership().epoch == epoch
        assert not [
            e for e in n1.events if e.kind == "leader_changed" and e.detail.get("epoch") != epoch
        ]
        assert n1.session is not None
        assert n1.candidacy is not None
        assert n1.candidacy.epoch == epoch
