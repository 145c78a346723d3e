"""A switchover request nobody can complete stops blocking the rules (issue 21: a leader whose
orchestrator was down was kept 55 s behind one, and the preferred-leader rule with it)."""

from __future__ import annotations

import json

import pytest

from sidecar.keys import Keys
from sidecar.pending import PendingSwitchover
from sidecar.records import MemberRecord
from sidecar.store.memory import MemoryStore
from sidecar.store.model import KeyValue
from sidecar.view import Candidate, ClusterView, Switchover, parse_switchover
from tests.agents import running_agent, until

CLUSTER = "pending"
KEYS = Keys(CLUSTER)


def asking(epoch: int, revision: int, timeout_s: float = 30.0) -> ClusterView:
    """A view whose leader holds `epoch`, with one request for it."""
    request = Switchover("n2", "n3", epoch, revision, timeout_s=timeout_s)
    leader = Candidate(KEYS.candidate("n1"), "n1", 1, epoch)
    return ClusterView(synced=True, electable=(leader,), switchovers={"n2": request})


def test_a_request_is_acted_on_until_its_own_timeout_and_the_grace_then_dropped_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pending = PendingSwitchover(grace_s=5.0)
    view = asking(epoch=3, revision=10, timeout_s=30.0)
    assert pending.current(view, 100.0) is not None
    assert pending.current(view, 134.9) is not None
    assert pending.current(view, 135.0) is None
    assert pending.current(view, 200.0) is None
    assert pending.dropped == 1
    assert len([r for r in caplog.records if "no longer waiting" in r.message]) == 1
    again = asking(epoch=3, revision=11, timeout_s=30.0)  # a new request: timed afresh
    assert pending.current(again, 200.0) is not None


def test_a_request_carries_its_timeout_and_a_hostile_one_is_bounded() -> None:
    def parsed(document: dict[str, object]) -> Switchover | None:
        kv = KeyValue(KEYS.switchover("n2"), json.dumps(document).encode(), 5, 5, 1, 9)
        return parse_switchover("n2", kv)

    base: dict[str, object] = {"to": None, "epoch": 3}
    assert (parsed(base) or Switchover("", None, 0, 0)).timeout_s == 30.0
    assert (parsed({**base, "timeout_s": 1e12}) or Switchover("", None, 0, 0)).timeout_s == 660
    assert parsed({**base, "timeout_s": "forever"}) is None


async def test_a_leader_stops_waiting_for_a_switchover_nobody_can_complete() -> None:
    """A request to n3 while a candidate ahead of n3 never queues again (its sidecar stuck,
    its proof of life not yet stale): the leader drops it after its timeout."""
    store = MemoryStore()
    async with running_agent(store, "n1", CLUSTER, switchover_hold=0.5) as n1:
        await until(lambda: n1.leadership().is_leader)
        zombie = await store.lease_grant(60)
        # Proves itself for the longest time allowed, and never queues again (a stuck sidecar).
        stuck = MemberRecord(node_id="zz", eligible=True, proof_ttl=60)
        await store.put(KEYS.member("zz"), stuck.encode(), lease=zombie.id)
        await store.put(KEYS.candidate("zz"), b"zz", lease=zombie.id)
        async with running_agent(store, "n3", CLUSTER, switchover_hold=0.5) as n3:
            await until(lambda: n3.candidacy is not None and len(n1.view.electable) == 3)
            epoch = n1.leadership().epoch
            request = {"to": "n3", "epoch": epoch, "by": "zz", "timeout_s": 1}
            await store.put(KEYS.switchover("zz"), json.dumps(request).encode(), lease=zombie.id)
            await until(lambda: "once the candidates ahead of it requeue" in n1.last_cycle)
            await until(lambda: n1.pending.dropped == 1, within_s=1 + 0.5 + 1.0 + 1.0)
            await until(lambda: "switchover" not in n1.last_cycle)
            assert n1.state().switchover is None
            assert n1.leadership().is_leader, "nothing moved: the request was dropped"
