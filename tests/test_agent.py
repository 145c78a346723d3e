"""The safety rules, one test each, on in-process agents (fast; the in-memory store or the
real etcd where the rule is about etcd). Process-level scenarios are in test_coordination.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from sidecar.agent import _cancel_and_wait
from sidecar.asyncio_compat import timeout
from sidecar.changes import view_changes
from sidecar.election import (
    Campaign,
    decide_leadership,
    enter_election,
    fenced_txn,
    reported_validity,
)
from sidecar.keys import Keys
from sidecar.membership import register
from sidecar.records import MemberRecord
from sidecar.session import Session
from sidecar.store.base import Store
from sidecar.store.model import Header, Put
from sidecar.view import ClusterView, ViewKeeper, build_view
from tests.agents import TTL, running_agent, until
from tests.reads import get_one


async def test_epoch_is_the_leader_keys_create_revision(store: Store, cluster: str) -> None:
    """Rule 1: the fencing token is the election key's create_revision, read from etcd."""
    async with running_agent(store, "n1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader)
        keys = (await store.get(Keys(cluster).election, prefix=True)).kvs
        assert len(keys) == 1
        assert agent.leadership().epoch == keys[0].create_revision


async def test_a_deposed_leaders_fenced_write_is_refused(store: Store, cluster: str) -> None:
    """Rule 1: leader-only writes compare the epoch, so a late write from the old leader fails."""
    keys = Keys(cluster)
    session = await Session.open(store, TTL)
    ours = await enter_election(store, keys, session, "old-leader")
    assert await fenced_txn(store, ours, [Put(keys.prefix + "data", b"first")])
    await store.delete(ours.key)  # deposed: our key is gone (expiry, resign, an operator)
    assert not await fenced_txn(store, ours, [Put(keys.prefix + "data", b"late")])
    kv = await get_one(store, keys.prefix + "data")
    assert kv is not None
    assert kv.value == b"first"


async def sole_candidate(store: Store, cluster: str) -> tuple[Session, Campaign, ClusterView]:
    """A session that campaigned alone, and the view that makes it the leader."""
    keys = Keys(cluster)
    session = await Session.open(store, TTL)
    await register(store, keys, MemberRecord(node_id="n1", eligible=True, proof_ttl=TTL), session)
    ours = await enter_election(store, keys, session, "n1")
    loaded = await store.get(keys.prefix, prefix=True)
    return session, ours, build_view(keys, loaded.kvs, loaded.header)


async def test_validity_clock_decides_at_read_time(store: Store, cluster: str) -> None:
    """Rule 2: the same view and campaign stop being leadership once the clock runs out."""
    session, ours, view = await sole_candidate(store, cluster)
    now = time.monotonic()
    assert decide_leadership(view, ours, session, margin_s=0.5, now=now).is_leader
    late = now + session.remaining(now) - 0.4  # inside the margin, lease not yet expired
    decided = decide_leadership(view, ours, session, margin_s=0.5, now=late)
    assert not decided.is_leader
    assert "validity" in decided.reason


async def test_no_claim_is_ever_reported_with_zero_validity(store: Store, cluster: str) -> None:
    """Rule 2 as callers see it: validity is reported floored to the millisecond, so the
    last half millisecond must not be claimed (it once read "leader, valid for 0.0 s")."""
    session, ours, view = await sole_candidate(store, cluster)
    now = time.monotonic()
    edge = now + session.remaining(now) - 0.5 - 0.0004  # 0.4 ms of validity left
    assert not decide_leadership(view, ours, session, margin_s=0.5, now=edge).is_leader
    inside = decide_leadership(view, ours, session, margin_s=0.5, now=edge - 0.002)
    assert inside.is_leader
    assert 0 < reported_validity(inside.valid_for_s) <= (inside.valid_for_s or 0)
    assert reported_validity(0.0029999) == 0.002  # floored, never rounded up


async def test_losing_our_key_ends_leadership_and_the_epoch(store: Store, cluster: str) -> None:
    """Rules 3 and 5: our key deleted behind our back -> not leader at once, and the next
    leadership is a new session with a higher epoch, never the old one resumed."""
    async with running_agent(store, "n1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader)
        first = agent.leadership().epoch
        assert agent.candidacy is not None
        first_lease = agent.candidacy.lease
        await store.delete(agent.candidacy.key)
        await until(lambda: not agent.leadership().is_leader or agent.leadership().epoch != first)
        await until(lambda: agent.leadership().is_leader)
        assert agent.leadership().epoch is not None
        assert agent.leadership().epoch > first  # type: ignore[operator]
        assert agent.candidacy is not None
        assert agent.candidacy.lease != first_lease  # a new session, not the old lease


async def test_session_uses_the_granted_ttl(store: Store) -> None:
    """Rule 4: ask for 1 s, etcd grants its minimum; validity follows the grant."""
    before = time.monotonic()
    session = await Session.open(store, 1)
    assert session.lease.ttl >= 2
    assert session.remaining() > 1.0
    assert session.valid_until >= before + session.lease.ttl - 0.1


async def test_foreign_cluster_id_blocks_leadership(store: Store, cluster: str) -> None:
    """Rule 7: a header from another etcd cluster stops this node acting as leader."""
    async with running_agent(store, "n1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader)
        header = agent.view.header
        assert header is not None
        foreign = Header(header.cluster_id + 1, header.member_id, header.revision + 1, 1)
        agent.header_seen(foreign)
        decided = agent.leadership()
        assert not decided.is_leader
        assert "cluster id" in decided.reason


async def test_reload_after_a_broken_watch_misses_no_deletion(store: Store, cluster: str) -> None:
    """Rule 9: a key deleted while the watch was down (and its event compacted away) is gone
    from the reloaded view, and reported as a departure."""
    keys = Keys(cluster)
    lease = await store.lease_grant(60)  # a live member's key is on a lease (rule 12)
    await store.put(keys.member("gone"), MemberRecord(node_id="gone").encode(), lease=lease.id)
    seen: list[str] = []
    loaded = await store.get(keys.prefix, prefix=True)
    stale = build_view(keys, loaded.kvs, loaded.header)
    assert "gone" in stale.members

    await store.delete(keys.member("gone"))
    revision = await store.put(keys.prefix + "other", b"x")
    await store.compact(revision)

    class Departures:
        def view_changed(self, old: ClusterView, new: ClusterView) -> None:
            seen.extend(f"{e.kind}:{e.detail.get('node_id')}" for e in view_changes(old, new))

        def header_seen(self, header: Header) -> None:
            pass

        def view_loaded(self, sent: float) -> None:
            pass

    keeper = ViewKeeper(store, keys)
    keeper.listen(Departures())
    keeper.current = stale  # what the node knew before its watch broke
    task = asyncio.create_task(keeper.run())
    try:
        await until(lambda: keeper.current.revision >= revision)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "gone" not in keeper.current.members
    assert "member_left:gone" in seen


async def test_resign_hands_over_at_once_and_requeues_with_a_higher_epoch(
    store: Store, cluster: str
) -> None:
    async with running_agent(store, "n1", cluster) as first:
        await until(lambda: first.leadership().is_leader)
        async with running_agent(store, "n2", cluster) as second:
            await until(lambda: second.view.alive == 2 and second.candidacy is not None)
            old_epoch = first.leadership().epoch
            assert await first.resign() is True
            await until(lambda: second.leadership().is_leader, within_s=1)
            assert second.leadership().epoch > old_epoch  # type: ignore[operator]
            await until(lambda: first.candidacy is not None)
            assert first.candidacy is not None
            assert first.candidacy.epoch > second.leadership().epoch  # type: ignore[operator]
            assert not first.leadership().is_leader
            assert "n1" in second.view.members  # resigning is not leaving


async def test_shutdown_is_quick_even_with_a_slow_demotion_hook(
    store: Store, cluster: str, tmp_path: Path
) -> None:
    done = tmp_path / "demoted"
    hook = f"sleep 1; touch {done}"
    async with running_agent(store, "n1", cluster, on_demoted=hook) as agent:
        await until(lambda: agent.leadership().is_leader)
        await until(lambda: agent.last_cycle.startswith("leader"))
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert (await store.get(Keys(cluster).prefix, prefix=True)).kvs == ()  # lease revoked
    # The hook was left to finish on its own, not killed half-way.
    await until(done.exists, within_s=5)


async def test_shutdown_outlasts_a_cancel_that_a_task_swallowed() -> None:
    """On Python 3.11 `asyncio.wait_for` can drop a cancel (CPython gh-86296); the sidecar then
    hung at SIGTERM until killed. Shutdown cancels again until every task has ended."""

    async def swallows_one_cancel() -> None:
        # What wait_for does when the cancel meets its inner await finishing:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        await asyncio.sleep(60)

    task = asyncio.create_task(swallows_one_cancel())
    await asyncio.sleep(0)
    async with timeout(2):
        await _cancel_and_wait(task)
    assert task.cancelled()
