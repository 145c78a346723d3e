"""The agent under hostile or broken etcd contents, in-process (rules 5, 7, 11-14).

Keys deleted or overwritten behind the sidecar's back come back; keys that are no valid
candidate never lead; a node blocked by the history guard withdraws; a sidecar whose etcd
hangs still stops claiming at once on shutdown, and finishes within its budget.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from sidecar.agent import SHUTDOWN_BUDGET_S, Agent
from sidecar.api.bodies import readiness
from sidecar.asyncio_compat import timeout
from sidecar.keys import Keys
from sidecar.records import MemberRecord, OrchestratorHealth
from sidecar.store.base import Store
from sidecar.store.memory import MemoryStore
from sidecar.store.model import Header, Put, TxnResult
from tests.agents import make_agent, running, running_agent, until
from tests.reads import get_one
from tests.waiting import wait_for


def show_another_cluster(agent: Agent) -> None:
    """Feed the agent an etcd header from another cluster: its history guard trips (rule 7)."""
    header = agent.view.header
    assert header is not None
    agent.header_seen(Header(header.cluster_id + 1, header.member_id, header.revision + 1, 1))


async def test_a_deleted_member_key_is_written_again(store: Store, cluster: str) -> None:
    keys = Keys(cluster)
    async with running_agent(store, "n1", cluster, eligible=False) as agent:
        await until(lambda: "n1" in agent.view.members)
        assert agent.session is not None
        lease = agent.session.lease_id
        await store.delete(keys.member("n1"))

        async def restored() -> bool:
            held = await get_one(store, keys.member("n1"))
            return held is not None and held.lease == lease

        await wait_for(restored, 2, what="the member key was not written again")
        assert [e.detail["what"] for e in agent.events if e.kind == "key_restored"] == ["member"]


async def test_an_overwritten_record_is_replaced_by_ours(store: Store, cluster: str) -> None:
    """Rule 12: a record on no lease is nobody's. It used to be served as ours, and then
    blocked every restart."""
    keys = Keys(cluster)
    async with running_agent(store, "n1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader)
        forged = MemberRecord(node_id="n1", hostname="evil", pid=1, eligible=True)
        await store.put(keys.member("n1"), forged.encode())

        async def ours_again() -> bool:
            held = await get_one(store, keys.member("n1"))
            assert held is not None, "the member key vanished"
            return held.lease != 0 and MemberRecord.decode(held.value) == agent.member.record

        await wait_for(ours_again, 3, what="the forged record was not replaced")
        await until(lambda: agent.leadership().is_leader, within_s=3)


async def test_a_deleted_candidate_key_campaigns_afresh(store: Store, cluster: str) -> None:
    """A follower whose candidate key was deleted is a candidate again, at a new revision
    (so it can never sneak back in with its old, lower epoch)."""
    async with running_agent(store, "n1", cluster) as leader:
        await until(lambda: leader.leadership().is_leader)
        async with running_agent(store, "n2", cluster) as follower:
            await until(lambda: follower.candidacy is not None)
            assert follower.candidacy is not None
            before = follower.candidacy
            await store.delete(before.key)
            await until(
                lambda: follower.candidacy is not None and follower.candidacy.epoch > before.epoch,
                within_s=2,
            )
            await until(lambda: [c.node_id for c in follower.view.electable] == ["n1", "n2"])
            kinds = [e.detail["what"] for e in follower.events if e.kind == "key_restored"]
            assert kinds == ["candidate"]


@pytest.mark.parametrize(
    ("name", "value", "lease_of"),
    [
        ("deadbeef", b"n3", None),  # no lease, a non-eligible member's name
        ("deadbeef", b"ghost", None),  # no lease, no member at all
        ("own-lease", b"n3", "n3"),  # on a lease, but the key does not name its node
        ("n3", b"n3", "n3"),  # a valid-looking key for a member that is not eligible
        ("n1", b"n1\x00", "n1"),  # a value that is no node id
        ("lease-hex", b"n1", "n1"),  # named by its lease, as 0.1 did, for a member that is newer
    ],
)
async def test_forged_candidates_never_lead(
    store: Store, cluster: str, name: str, value: bytes, lease_of: str | None
) -> None:
    keys = Keys(cluster)
    async with (
        running_agent(store, "n1", cluster) as n1,
        running_agent(store, "n3", cluster, eligible=False) as n3,
    ):
        await until(lambda: n1.leadership().is_leader and n3.view.leader is not None)
        for candidate in (await store.get(keys.election, prefix=True)).kvs:
            await store.delete(candidate.key)  # the real candidates are gone ...
        holder = {"n1": n1, "n3": n3}.get(lease_of or "")
        lease = holder.session.lease_id if holder and holder.session else 0
        key = keys.election + (f"{lease:x}" if name == "lease-hex" else name)
        await store.put(key, value, lease=lease)  # ... and a forged one is all there is
        await until(lambda: any(i.key == key for i in n3.view.ignored))
        assert n3.view.leader is None or n3.view.leader.node_id == "n1"
        await until(lambda: n3.leadership().leader == "n1", within_s=3)  # n1 campaigned again
        assert n1.leadership().is_leader
        assert not n3.leadership().is_leader


async def test_a_candidacy_does_not_outlive_its_member_record(store: Store, cluster: str) -> None:
    """A member key written again after the candidacy (the node re-joined) ends that candidacy:
    otherwise an old, lower epoch could lead again after a higher one."""
    keys = Keys(cluster)
    async with running_agent(store, "n1", cluster) as n1, running_agent(store, "n2", cluster) as n2:
        await until(lambda: n1.leadership().is_leader and n2.candidacy is not None)
        assert n2.candidacy is not None
        old_epoch = n2.candidacy.epoch
        await store.delete(keys.member("n2"))
        await until(lambda: n2.candidacy is not None and n2.candidacy.epoch > old_epoch)
        assert all(c.create_revision != old_epoch for c in n1.view.electable)


async def test_a_node_blocked_by_history_withdraws_and_says_so_once(
    store: Store, cluster: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rule 7: a blocked node's key must not stay the oldest (nobody would lead), and the
    violation is one ERROR line, not one per watch batch."""
    keys = Keys(cluster)
    async with running_agent(store, "n1", cluster) as blocked:
        await until(lambda: blocked.leadership().is_leader)
        async with running_agent(store, "n2", cluster) as other:
            await until(lambda: other.candidacy is not None)
            with caplog.at_level(logging.ERROR):
                for _ in range(5):
                    show_another_cluster(blocked)
                await until(lambda: other.leadership().is_leader, within_s=3)
                await store.put(keys.prefix + "more", b"x")  # more headers, no more errors
                await until(lambda: blocked.view.revision >= other.view.revision)
            mine = [c for c in other.view.candidates if c.node_id == "n1"]
            assert mine == []
            assert blocked.candidacy is None
            errors = [r for r in caplog.records if "cluster id changed" in r.getMessage()]
            assert len(errors) == 1


class HangingStore(MemoryStore):
    """A store whose every call hangs once `hang` is set: packets that vanish, in-process."""

    hang = False

    async def _maybe_hang(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)

    async def txn(self, *args: Any, **kwargs: Any) -> Any:
        await self._maybe_hang()
        return await super().txn(*args, **kwargs)

    async def lease_revoke(self, lease_id: int) -> None:
        await self._maybe_hang()
        await super().lease_revoke(lease_id)

    async def lease_keepalive(self, lease_id: int) -> int:
        await self._maybe_hang()
        return await super().lease_keepalive(lease_id)


async def test_shutdown_stops_claiming_before_etcd_answers(cluster: str) -> None:
    """Rule 13: from the moment stop is set nothing answers leader, and the shutdown ends
    within its budget although etcd never answers."""
    store = HangingStore()
    agent = make_agent(store, "n1", cluster)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await until(lambda: agent.leadership().is_leader)
        store.hang = True
        agent.stop_claiming()  # what the SIGTERM handler does, then it sets stop
        stop.set()
        assert not agent.leadership().is_leader
        started = time.monotonic()
        async with timeout(SHUTDOWN_BUDGET_S + 1.5):
            await task
        assert time.monotonic() - started < SHUTDOWN_BUDGET_S + 1
        assert "not revoked" in agent.farewell
        assert "epoch" in agent.farewell
    finally:
        task.cancel()
        await store.close()


async def test_a_follower_never_says_it_handed_leadership_over(store: Store, cluster: str) -> None:
    agent = make_agent(store, "n9", cluster, eligible=False)
    async with running(agent):
        await until(lambda: agent.registered)
    assert agent.farewell.endswith("revoked")
    assert "handed over" not in agent.farewell


async def test_without_answers_from_etcd_nobody_is_named_leader(cluster: str) -> None:
    """Rule 11: once the last answer through a quorum is older than the validity budget, a
    follower names no leader, reports the last one as such, and is not ready; the leader's
    reason is the same, not "not registered"."""
    store = HangingStore()
    try:
        async with (
            running_agent(store, "n1", cluster) as n1,
            running_agent(store, "n2", cluster) as n2,
        ):
            await until(lambda: n2.leadership().leader == "n1" and readiness(n2.state()) is None)
            epoch = n2.leadership().epoch
            store.hang = True
            budget = n2.budget_s
            started = time.monotonic()
            await until(lambda: n2.leadership().leader is None, within_s=budget + 2)
            assert time.monotonic() - started > budget - 1  # not before the budget is spent
            seen = n2.leadership()
            assert seen.last_known is not None
            assert (seen.last_known.leader, seen.last_known.epoch) == ("n1", epoch)
            for agent in (n1, n2):
                now = agent.leadership()
                assert not now.is_leader
                reason = readiness(agent.state())
                assert reason is not None
                assert reason.startswith("no answer from an etcd quorum for"), reason
            store.hang = False
    finally:
        store.hang = False
        await store.close()


async def test_stepping_down_on_its_own_keeps_the_validity_it_promised(
    store: Store, cluster: str
) -> None:
    """A leader that stops leading for a reason of its own (here: blocked by the history
    guard) must not revoke its lease, which would let a successor in, before the validity it
    reported runs out (found by `make chaos` at TTL 10: a view reload failed, the leader
    stepped down, and its revoke let the next leader in 0.36 s inside its promise)."""
    async with running_agent(store, "n1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader)
        assert agent.candidacy is not None
        candidate = agent.candidacy.key
        promised = agent.leadership()
        assert promised.valid_for_s is not None
        promised_until = time.monotonic() + promised.valid_for_s
        show_another_cluster(agent)
        await until(lambda: agent.retiring)
        assert readiness(agent.state()) is not None  # not ready while stepping down
        while time.monotonic() < promised_until - 0.2:
            assert await get_one(store, candidate) is not None, "revoked inside the promise"
            await asyncio.sleep(0.05)
        await wait_for(
            lambda: _gone(store, candidate),
            within_s=3,
            what="the old lease was never revoked after the promise ran out",
        )


async def _gone(store: Store, key: str) -> bool:
    return await get_one(store, key) is None


async def test_our_node_id_taken_by_another_live_lease_is_never_overwritten(
    store: Store, cluster: str
) -> None:
    """Rule 6 at run time: another live lease holding our member key is another machine
    with our node id. We stand aside (no candidacy, not ready) and take the key back only
    once it is free."""
    keys = Keys(cluster)
    async with running_agent(store, "n1", cluster) as agent:
        await until(lambda: agent.leadership().is_leader)
        other = await store.lease_grant(60)
        impostor = MemberRecord(node_id="n1", hostname="elsewhere", eligible=True)
        await store.put(keys.member("n1"), impostor.encode(), lease=other.id)
        await until(lambda: agent.conflict is not None)
        assert not agent.leadership().is_leader
        reason = readiness(agent.state())
        assert reason is not None
        assert "held by another live lease" in reason
        await until(lambda: agent.candidacy is None)
        held = await get_one(store, keys.member("n1"))
        assert held is not None
        assert held.lease == other.id  # not overwritten
        await store.lease_revoke(other.id)
        await until(lambda: agent.conflict is None and agent.leadership().is_leader, within_s=5)


async def test_a_blocked_follower_takes_its_candidate_key_away(store: Store, cluster: str) -> None:
    """Rule 7 for a node that does not lead (yet): its key must not stay in the queue, where it
    would become the oldest and block the election when the leader goes."""
    keys = Keys(cluster)
    async with running_agent(store, "n1", cluster) as leader:
        await until(lambda: leader.leadership().is_leader)
        async with running_agent(store, "n2", cluster) as follower:
            await until(lambda: follower.candidacy is not None)
            show_another_cluster(follower)

            async def withdrawn() -> bool:
                found = (await store.get(keys.election, prefix=True)).kvs
                return [kv.value for kv in found] == [b"n1"]

            await wait_for(withdrawn, 3, what="the blocked follower's candidate key stayed")


async def test_a_follower_whose_node_id_is_taken_stands_aside(store: Store, cluster: str) -> None:
    """Rule 6 at run time, for a node that does not lead: the key is not fought over (no
    endless rewrite), and the node says why it is not ready."""
    keys = Keys(cluster)
    async with running_agent(store, "n2", cluster, eligible=False) as agent:
        await until(lambda: agent.registered and "n2" in agent.view.members)
        other = await store.lease_grant(60)
        impostor = MemberRecord(node_id="n2", hostname="elsewhere")
        await store.put(keys.member("n2"), impostor.encode(), lease=other.id)
        await until(lambda: agent.conflict is not None, within_s=3)
        reason = readiness(agent.state())
        assert reason is not None
        assert "held by another live lease" in reason
        held = await get_one(store, keys.member("n2"))
        assert held is not None
        assert held.lease == other.id


class HeldAnswers(MemoryStore):
    """Applies every transaction at once, but while `held` answers the first that writes
    `marker` only once `release` is set: the moment in which etcd holds a write that its
    writer has not heard back about. (Other writes, such as proofs of life, go on as usual.)"""

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.held = False
        self.marker = marker
        self.release = asyncio.Event()

    async def txn(self, *args: Any, **kwargs: Any) -> TxnResult:
        result = await super().txn(*args, **kwargs)
        writes = [op for op in args[1] if isinstance(op, Put)] if len(args) > 1 else []
        if self.held and any(self.marker in op.value for op in writes):
            self.held = False  # the first such write only
            await self.release.wait()
        return result


async def test_our_health_update_in_flight_is_not_taken_for_an_overwrite(cluster: str) -> None:
    """The watch can show our own new record before the write's answer arrives. Taken for a
    stranger's overwrite, it used to be 'restored', ending the candidacy: the leader stepped
    down because its orchestrator's health changed (seen once under load in CI)."""
    store = HeldAnswers(marker=b"HTTP 503")
    keepalives: list[float] = []
    async with running_agent(store, "n1", cluster) as agent:
        agent.listen_keepalives(keepalives.append)
        await until(lambda: agent.leadership().is_leader)
        epoch = agent.leadership().epoch
        health = OrchestratorHealth(healthy=False, detail="HTTP 503", since="2026-12-01T16:00:00Z")
        store.held = True
        publishing = asyncio.create_task(agent.member.publish_health(health))

        def seen() -> bool:
            member = agent.view.members.get("n1")
            return (
                member is not None
                and member.record is not None
                and (member.record.orchestrator == health)
            )

        await until(seen)  # etcd and the view have it; the writer is still waiting
        ticks = len(keepalives)
        await until(lambda: len(keepalives) >= ticks + 2)  # the control loop ran meanwhile
        store.held = False
        store.release.set()
        assert await asyncio.wait_for(publishing, 5) is True
        ticks = len(keepalives)
        await until(lambda: len(keepalives) >= ticks + 2)
        assert [e for e in agent.events if e.kind == "key_restored"] == []
        now = agent.leadership()
        assert (now.is_leader, now.epoch) == (True, epoch)
