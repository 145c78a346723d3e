"""The cluster history against an eligible node that forges or floods it (issue 21, decision
0023). Measured before: a forged `leader_changed` was shown as real, one key with a huge
revision in its name made every new leader skip its catch-up, and 10,100 forged entries made
the honest leader's own trim delete the real history while `ringside flaps` counted a live
node absent 10,100 times. These tests write raw keys, as an attacker would.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar import history_entries
from sidecar.election import Campaign
from sidecar.event_log import EventLog
from sidecar.events import ClusterEvent, Recorder
from sidecar.flaps import flap_report
from sidecar.history_entries import read_recorded
from sidecar.journal import Journal, read_history
from sidecar.keys import Keys
from sidecar.store.memory import MemoryStore
from sidecar.store.model import Put

HONEST, MALLORY, VICTIM = "n1", "mallory", "n2"


def NOW() -> float:
    return 1000.0


def event(kind: str, revision: int, at: float = 100.0, **detail: Any) -> ClusterEvent:
    return ClusterEvent(kind, revision, detail, at)


async def advance(store: MemoryStore, revision: int) -> None:
    """Move the store past `revision`: entries report events that happened before they
    were written."""
    while await store.put("/filler", b"") < revision:
        pass


async def lead(store: MemoryStore, keys: Keys, log: EventLog, node: str) -> Campaign:
    """`node`'s candidate key, and its own leader change at that epoch in its log."""
    epoch = await store.put(keys.candidate(node), node.encode())
    log.add(event("leader_changed", epoch, leader=node, epoch=epoch, reason="election"))
    return Campaign(keys.candidate(node), 0, epoch)


def forged(kind: str, revision: int, detail: dict[str, Any], *, by: str, epoch: int) -> bytes:
    return json.dumps(
        {"kind": kind, "revision": revision, "at": 100.0, "detail": detail, "by": by,
         "epoch": epoch}
    ).encode()  # fmt: skip


async def honest_history(store: MemoryStore, keys: Keys, events: int = 5) -> Campaign:
    """`HONEST` leads and records `events` joins: the real history."""
    await advance(store, 20 + events)
    log = EventLog()
    journal = Journal(store, keys, log, node_id=HONEST, clock=NOW)
    for i in range(events):
        log.add(event("member_joined", 10 + i, node_id=f"w{i}"))
    campaign = await lead(store, keys, log, HONEST)
    await journal.step(campaign)
    return campaign


async def test_a_forged_leader_change_is_not_shown(store: MemoryStore, cluster: str) -> None:
    keys = Keys(cluster)
    campaign = await honest_history(store, keys, events=1)
    await advance(store, campaign.epoch + 10)
    claim = {"leader": MALLORY, "epoch": campaign.epoch}
    attempts = {  # where mallory cannot write once RBAC has its grants, and where it can
        f"{HONEST}/{campaign.epoch + 1:020d}-leader_changed-{MALLORY}": forged(
            "leader_changed", campaign.epoch + 1, claim, by=MALLORY, epoch=campaign.epoch
        ),  # in the honest leader's part, saying who wrote it
        f"{HONEST}/{campaign.epoch + 2:020d}-leader_changed-{MALLORY}": forged(
            "leader_changed", campaign.epoch + 2, claim, by=HONEST, epoch=campaign.epoch + 1
        ),  # ... or passing as it, at an epoch it never declared
        f"{campaign.epoch + 3:020d}-leader_changed-{MALLORY}": forged(
            "leader_changed", campaign.epoch + 3, claim, by=MALLORY, epoch=campaign.epoch
        ),  # the layout before 0023, where any eligible node could write
        f"{MALLORY}/{campaign.epoch + 4:020d}-leader_changed-{VICTIM}": forged(
            "leader_changed",
            campaign.epoch + 4,
            {"leader": VICTIM, "epoch": campaign.epoch + 4},
            by=MALLORY,
            epoch=campaign.epoch,
        ),  # its own part, at the honest leader's epoch, which it never declared
    }
    for name, value in attempts.items():
        await store.put(keys.history + name, value)

    read = await read_recorded(store, keys)
    leaders = [e.detail.get("leader") for e in read.events if e.kind == "leader_changed"]
    assert leaders == [HONEST]
    assert read.skipped == {"forged": 1, "undeclared": 2, "legacy": 1}
    shown = read.events[-1]
    assert shown.recorded_by == (Recorder(HONEST, campaign.epoch),)


async def test_a_declared_forgery_is_shown_as_its_writers(store: MemoryStore, cluster: str) -> None:
    """What is left to a malicious eligible node: its own part. Whatever it writes there,
    with its own declaration, is shown as written by it, never as another's."""
    keys = Keys(cluster)
    await honest_history(store, keys, events=1)
    at = await store.put("/filler", b"")
    declared = {"leader": MALLORY, "epoch": at - 1}
    claim = forged("leader_changed", at - 1, declared, by=MALLORY, epoch=at - 1)
    await store.put(f"{keys.history}{MALLORY}/{at - 1:020d}-leader_changed-{MALLORY}", claim)
    found = {e.detail["leader"]: e.writers for e in await read_history(store, keys)
             if e.kind == "leader_changed"}  # fmt: skip
    assert found == {HONEST: HONEST, MALLORY: MALLORY}


@pytest.mark.parametrize("where", ["", f"{MALLORY}/", f"{HONEST}/"])
async def test_a_key_with_a_huge_revision_does_not_stop_a_catch_up(
    store: MemoryStore, cluster: str, where: str
) -> None:
    keys = Keys(cluster)
    await honest_history(store, keys, events=1)
    junk = forged("member_left", 10**19, {"node_id": VICTIM}, by=MALLORY, epoch=1)
    await store.put(f"{keys.history}{where}99999999999999999999-member_left-{VICTIM}", junk)
    # The honest leader crashes; n3 saw it as a follower and leads next.
    log = EventLog()
    successor = Journal(store, keys, log, node_id="n3", clock=NOW)
    crash = await store.put("/filler", b"")
    log.add(event("member_left", crash, node_id=HONEST, reason="expired"))
    await successor.step(await lead(store, keys, log, "n3"))
    kinds = {(e.kind, e.detail.get("node_id") or e.detail.get("leader")) for e in
             await read_history(store, keys)}  # fmt: skip
    assert ("member_left", HONEST) in kinds
    assert ("leader_changed", "n3") in kinds
    assert ("member_left", VICTIM) not in kinds  # the junk itself is shown nowhere


async def test_a_flood_in_one_part_neither_trims_the_real_history_nor_counts_as_flaps(
    store: MemoryStore, cluster: str
) -> None:
    keys = Keys(cluster)
    campaign = await honest_history(store, keys, events=66)
    await advance(store, 10_200)
    left = {"node_id": VICTIM, "reason": "expired"}
    flood = [
        Put(
            f"{keys.history}{MALLORY}/{i:020d}-member_left-{VICTIM}",
            forged("member_left", i, left, by=MALLORY, epoch=campaign.epoch),
        )
        for i in range(1, 10_101)
    ]
    for start in range(0, len(flood), 100):
        assert (await store.txn([], flood[start : start + 100])).succeeded
    journal = Journal(store, keys, EventLog(), node_id=HONEST, clock=NOW)

    assert await journal.trim(campaign) == 0  # the honest leader's trim: its own part only
    read = await read_recorded(store, keys)
    assert len(read.events) == 67  # 66 joins and its own leader change
    assert read.skipped == {"undeclared": 10_100}
    assert flap_report(read.events, now=NOW()) == []


@pytest.mark.parametrize("flooder", ["aaa", "zzz"])  # sorting before the honest leader, after
async def test_a_flood_past_the_read_bound_hides_no_other_writer(
    store: MemoryStore, cluster: str, monkeypatch: pytest.MonkeyPatch, flooder: str
) -> None:
    """More keys than one read takes: the writers are found at both ends of the key order,
    where one flooding writer cannot hide another, and each is read on its own, at most
    `PER_WRITER_READ` of its newest."""
    monkeypatch.setattr(history_entries, "TOTAL_READ", 50)
    monkeypatch.setattr(history_entries, "PER_WRITER_READ", 40)
    keys = Keys(cluster)
    await honest_history(store, keys, events=5)
    await advance(store, 500)
    for i in range(1, 301):
        value = forged("member_joined", i, {"node_id": "x"}, by=flooder, epoch=1)
        await store.put(f"{keys.history}{flooder}/{i:020d}-member_joined-x", value)
    read = await read_recorded(store, keys)
    assert {e.writers for e in read.events} == {HONEST}
    assert len(read.events) == 6
    assert read.skipped == {"over_cap": 260, "undeclared": 40}
