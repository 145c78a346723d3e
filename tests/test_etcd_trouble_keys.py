"""ringside's keys tampered with in etcd, and restarts right after a crash: real `ringside run`
processes and a real 3-member etcd, the keys changed behind the sidecars' backs with a direct
client, as an operator's slip or a compromised node would.

- a deleted member or candidate key is written again within one keepalive period, with an
  event, and a follower that lost both keys can still take over (safety rule 12);
- forged candidate keys (no lease, a non-eligible or unknown node) never lead, never block a
  real candidate, and are reported (the design's "etcd keys");
- a member record on no lease is replaced, never obeyed, also when it is there at start-up;
- a sidecar restarted right after kill -9 takes its key back at once (its dead predecessor's
  lease is revoked, not waited out), also after the etcd Raft leader moved in between.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from sidecar.store.base import Store
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import Delete, Put
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import FLEET_TTL, Fleet, Sidecar
from tests.reads import get_one
from tests.trouble_support import (
    EventStream,
    Findings,
    LeaderLog,
    candidates,
    candidates_of,
    converged,
    election_prefix,
    eventually,
    exit_code,
    forged_record,
    http_get,
    keepalive_age,
    lease_of,
    member_key,
    metric_total,
    move_raft_leader,
    record_of,
)

TTL = FLEET_TTL
HEAL_BOUND_S = TTL / 3 + 3.0  # one keepalive period, with slack for a busy CI machine
TAKE_OVER_BOUND_S = 2 * TTL + 5.0  # worst case of the timing model, with slack
RESTART_BOUND_S = 3.0  # kill -9 to registered again: less than the TTL, so no waiting it out
REGISTER_BOUND_S = 10.0  # a clean start: process start-up, lease, member key
OBSERVE_S = 2 * TTL  # how long forged candidates are watched for after they appear
MAX_MOVES = 6  # etcd Raft leader moves while a restarted sidecar takes its key back
NODES = ("hetzner-cpu1", "hetzner-cpu2")
PLAIN = "vast-29118471"  # a node that is not leader-eligible


@pytest.fixture
async def direct(etcd: LocalEtcdCluster) -> AsyncIterator[EtcdStore]:
    """A client of our own, straight to etcd: the adversary's hands."""
    store = etcd.client()
    try:
        yield store
    finally:
        await store.close()


async def two_nodes(fleet: Fleet) -> tuple[Sidecar, Sidecar]:
    """hetzner-cpu1 leads, hetzner-cpu2 (eligible too) follows; both converged."""
    leader = fleet.add(NODES[0])
    await fleet.wait_converged(NODES[:1], within_s=15)
    follower = fleet.add(NODES[1])
    await fleet.wait_converged(NODES, within_s=15, leader_among=NODES[:1])
    return leader, follower


async def holds_own_record(store: Store, sidecar: Sidecar) -> bool:
    """The sidecar's member key holds this very process's record, on its current lease."""
    if not sidecar.running or sidecar.process is None:
        return False
    kv = await get_one(store, member_key_of(sidecar))
    record = record_of(kv)
    return (
        kv is not None
        and kv.lease != 0
        and kv.lease == await lease_of(sidecar)
        and record.get("pid") == sidecar.process.pid
        and record.get("hostname") == socket.gethostname()
    )


def member_key_of(sidecar: Sidecar) -> str:
    return f"/ringside/{sidecar.env['RINGSIDE_CLUSTER']}/members/{sidecar.node_id}"


async def registered_or_gone(store: Store, sidecar: Sidecar) -> bool:
    return not sidecar.running or await holds_own_record(store, sidecar)


async def holder(store: Store, sidecar: Sidecar) -> str:
    """Who holds the member key, in a few words, for failure messages."""
    kv = await get_one(store, member_key_of(sidecar))
    if kv is None:
        return "nobody (the key is missing)"
    record = record_of(kv)
    return f"pid {record.get('pid')} on host {record.get('hostname')}, lease {kv.lease:x}"


def last_words(sidecar: Sidecar) -> str:
    """Its last warning or error (else its last line): what an operator would look at."""
    lines = sidecar.log().strip().splitlines()
    loud = [line for line in lines if " WARNING " in line or " ERROR " in line]
    return (loud or lines or ["(empty log)"])[-1]


async def test_deleted_keys_of_a_follower_come_back_within_a_keepalive_period(
    fleet: Fleet, direct: EtcdStore
) -> None:
    _, follower = await two_nodes(fleet)
    findings = Findings(f"the keys of follower {follower.node_id} deleted behind its back")
    key = member_key(fleet, follower.node_id)

    async def member_back() -> bool:
        kv = await get_one(direct, key)
        return (
            kv is not None
            and kv.lease != 0
            and kv.lease == await lease_of(follower)
            and record_of(kv).get("node_id") == follower.node_id
        )

    async with EventStream(follower.url + "/v1/events") as stream:
        await direct.delete(key)
        findings.check(
            await eventually(member_back, HEAL_BOUND_S) is not None,
            f"{key} was still missing {HEAL_BOUND_S:.1f} s after it was deleted (every other"
            f" node counts {follower.node_id} as gone); held by {await holder(direct, follower)}",
        )
        restored = functools.partial(restored_event, stream, key)
        findings.check(
            await eventually(restored, 1.0) is not None,
            f"/v1/events of {follower.node_id} showed no key_restored event for {key}"
            f" (what=member); it showed {stream.kinds()}",
        )

    async def campaigning() -> bool:  # restoring the member key ended the old candidacy
        return bool(await candidates_of(direct, fleet, follower.node_id))

    await eventually(campaigning, HEAL_BOUND_S)
    mine = await candidates_of(direct, fleet, follower.node_id)
    if findings.check(bool(mine), f"{follower.node_id} has no candidate key to delete"):
        old = mine[-1]
        await direct.delete(old.key)

        async def candidate_back() -> bool:
            lease = await lease_of(follower)
            fresh = await candidates_of(direct, fleet, follower.node_id)
            return any(
                kv.create_revision > old.create_revision and kv.lease == lease for kv in fresh
            )

        findings.check(
            await eventually(candidate_back, HEAL_BOUND_S) is not None,
            f"{follower.node_id}'s candidate key was not made again within {HEAL_BOUND_S:.1f} s"
            f" of its deletion (it can never take over); candidate keys now:"
            f" {[(kv.key, kv.value) for kv in await candidates(direct, fleet)]}",
        )
    findings.verify()


async def restored_event(stream: EventStream, key: str) -> bool:
    return stream.find("key_restored", what="member", key=key) is not None


async def test_a_follower_that_lost_both_keys_still_takes_over(
    fleet: Fleet, direct: EtcdStore
) -> None:
    leader, follower = await two_nodes(fleet)
    mine = await candidates_of(direct, fleet, follower.node_id)
    deletes = [Delete(member_key(fleet, follower.node_id)), *(Delete(kv.key) for kv in mine)]
    await direct.txn([], deletes)
    leader.signal(signal.SIGTERM)
    status = await converged(
        fleet, [follower.node_id], within_s=TAKE_OVER_BOUND_S, leader_among=[follower.node_id]
    )
    assert not isinstance(status, str), (
        f"the leader stopped and {follower.node_id}, the only other eligible node, whose keys"
        f" had been deleted just before, never took over: nobody led for {TAKE_OVER_BOUND_S} s;"
        f" {status}"
    )
    assert await exit_code(leader, 5) == 0, "the stopped leader did not exit 0"


async def test_forged_candidate_keys_never_lead_and_never_block(
    fleet: Fleet, direct: EtcdStore
) -> None:
    first = fleet.add(NODES[0])
    await fleet.wait_converged(NODES[:1], within_s=15)
    fleet.add(NODES[1])
    fleet.add(PLAIN, eligible=False)
    everyone = [*NODES, PLAIN]
    await fleet.wait_converged(everyone, within_s=15, leader_among=[first.node_id])
    findings = Findings("every candidate key replaced, in one transaction, by forged keys")
    prefix = election_prefix(fleet)
    forged = {prefix + "deadbeef": PLAIN, prefix + "cafebabe": "ghost-node"}  # no lease

    async with LeaderLog(fleet) as seen:
        forged_at = time.monotonic()
        real = [Delete(kv.key) for kv in await candidates(direct, fleet)]
        await direct.txn([], [*real, *(Put(k, v.encode()) for k, v in forged.items())])

        async def campaigning_again() -> bool:
            found = [await candidates_of(direct, fleet, n) for n in NODES]
            return all(any(kv.lease != 0 for kv in mine) for mine in found)

        findings.check(
            await eventually(campaigning_again, HEAL_BOUND_S) is not None,
            f"the eligible nodes did not all campaign again within {HEAL_BOUND_S:.1f} s; keys"
            f" now: {[(kv.key, kv.value, kv.lease) for kv in await candidates(direct, fleet)]}",
        )
        status = await converged(fleet, everyone, within_s=TAKE_OVER_BOUND_S, leader_among=NODES)
        findings.check(not isinstance(status, str), f"no eligible node led again: {status}")
        problems: list[str] = []
        reported = functools.partial(forgeries_reported, fleet, set(forged), problems)
        findings.check(await eventually(reported, 5.0) is not None, "; ".join(problems[-1:]))
        # Watching for a while is the point here: a forged leader may show up at any moment.
        await asyncio.sleep(max(0.0, forged_at + OBSERVE_S - time.monotonic()))
    answered = {who for when, who, _, _ in seen.answers if when > forged_at}
    findings.check(answered == set(everyone), f"only {answered} answered /v1/leader meanwhile")
    wrong = seen.naming_others([*NODES, None])
    if wrong:
        when, who, named, epoch = wrong[0]
        findings.check(
            False,
            f"{who} named {named!r} (epoch {epoch}) as leader {when - forged_at:.1f} s after the"
            f" forgery, and {len(wrong) - 1} more answers named a forged candidate",
        )
    findings.verify()


async def forgeries_reported(fleet: Fleet, keys: set[str], problems: list[str]) -> bool:
    """Every sidecar lists every forged key, with a reason, and counts it in its metrics."""
    for sidecar in fleet.running():
        _, status = await http_get(sidecar.url + "/v1/status")
        listed = status.get("ignored_candidates") if isinstance(status, dict) else None
        entries = listed if isinstance(listed, list) else []
        named = {e.get("key") for e in entries if isinstance(e, dict) and e.get("reason")}
        if not keys <= named:
            problems.append(
                f"{sidecar.node_id}'s /v1/status does not list {sorted(keys)} with a reason"
                f" under ignored_candidates: {listed!r}"
            )
            return False
        _, text = await http_get(sidecar.url + "/metrics")
        total = metric_total(text, "ringside_ignored_candidates")
        if total is None or total < 1:
            problems.append(f"{sidecar.node_id}'s /metrics ringside_ignored_candidates: {total}")
            return False
    return True


async def test_a_member_record_on_no_lease_is_replaced_never_obeyed(
    fleet: Fleet, direct: EtcdStore
) -> None:
    leader, _ = await two_nodes(fleet)
    key = member_key(fleet, leader.node_id)
    findings = Findings(f"{key} overwritten with a record of pid 1 on host evil, on no lease")
    await direct.put(key, forged_record(leader.node_id))
    own = functools.partial(holds_own_record, direct, leader)
    findings.check(
        await eventually(own, HEAL_BOUND_S) is not None,
        f"{HEAL_BOUND_S:.1f} s after the overwrite the key was still held by"
        f" {await holder(direct, leader)}, not by the running sidecar",
    )
    findings.check(leader.running, f"the sidecar exited: {last_words(leader)}")

    for when in ("restarted after SIGTERM", "started with the forged record already there"):
        if leader.running:
            leader.signal(signal.SIGTERM)
            findings.check(await exit_code(leader, 10) == 0, "SIGTERM did not exit 0")
        if when.startswith("started with"):
            await direct.put(key, forged_record(leader.node_id))
        leader.start()
        await eventually(functools.partial(registered_or_gone, direct, leader), REGISTER_BOUND_S)
        findings.check(
            await holds_own_record(direct, leader),
            f"{when}: not registered within {REGISTER_BOUND_S} s (exit code"
            f" {leader.process.poll() if leader.process else None}, key held by"
            f" {await holder(direct, leader)}); its last log line: {last_words(leader)}",
        )
    findings.verify()


async def test_a_sidecar_restarted_right_after_kill_9_registers_within_3_s(
    fleet: Fleet, direct: EtcdStore
) -> None:
    sidecar = restartable_follower(fleet)
    await fleet.wait_converged(NODES, within_s=15)

    async def just_renewed() -> bool:
        age = await keepalive_age(sidecar)
        return age is not None and age < 0.5

    # Killed just after a keepalive: the dead process's lease then has most of its TTL to go.
    await eventually(just_renewed, TTL)
    await kill_9_then_restart(
        direct,
        sidecar,
        story=f"restarted right after kill -9 (the dead lease would live up to {TTL} s more)",
    )


async def test_a_sidecar_restarted_after_the_etcd_leader_moved_three_times_registers_at_once(
    fleet: Fleet, direct: EtcdStore
) -> None:
    sidecar = restartable_follower(fleet)
    await fleet.wait_converged(NODES, within_s=15)

    async def move_three_times() -> None:
        for _ in range(3):  # every new Raft leader gives the dead lease a full TTL again
            await move_raft_leader(fleet.etcd)

    await kill_9_then_restart(
        direct,
        sidecar,
        meanwhile=move_three_times,
        story="killed, then the etcd Raft leader moved three times, then restarted",
    )


def restartable_follower(fleet: Fleet) -> Sidecar:
    """The sidecar these restarts kill: a follower, since a leader's restart must also wait
    out the validity it promised (decision 0025, `tests/test_promise.py`), whatever its lease;
    here the lease alone is timed. The second node leads."""
    fleet.add(NODES[1])
    return fleet.add(NODES[0], eligible=False)


async def kill_9_then_restart(
    direct: EtcdStore,
    sidecar: Sidecar,
    *,
    story: str,
    meanwhile: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """kill -9, `meanwhile`, start again with the same lock file: registered within the bound."""
    old = await holder(direct, sidecar)
    sidecar.signal(signal.SIGKILL)
    assert await exit_code(sidecar, 5) is not None
    if meanwhile is not None:
        await meanwhile()
    sidecar.start()
    await eventually(functools.partial(registered_or_gone, direct, sidecar), RESTART_BOUND_S)
    assert await holds_own_record(direct, sidecar), (
        f"{story}: {sidecar.node_id} was not registered within {RESTART_BOUND_S} s (exit code"
        f" {sidecar.process.poll() if sidecar.process else None}; key held by"
        f" {await holder(direct, sidecar)}, before the kill by {old}); the dead predecessor's"
        f" lease was waited out, not revoked. Last log line: {last_words(sidecar)}"
    )


async def test_a_sidecar_restarting_while_the_etcd_leader_keeps_moving_registers_and_stays(
    fleet: Fleet, direct: EtcdStore
) -> None:
    sidecar = restartable_follower(fleet)
    await fleet.wait_converged(NODES, within_s=15)
    old = await holder(direct, sidecar)
    sidecar.signal(signal.SIGKILL)
    assert await exit_code(sidecar, 5) is not None
    sidecar.start()  # at once, and the Raft leader moves while it takes its key back
    # Each move gives the dead process's lease a full TTL again, so waiting it out never ends
    # while the moves go on; at least three moves, to see the restarted sidecar live through.
    moves = 0
    while moves < 3 or (moves < MAX_MOVES and not await registered_or_gone(direct, sidecar)):
        await move_raft_leader(fleet.etcd)
        moves += 1
    await eventually(functools.partial(registered_or_gone, direct, sidecar), 2.0)
    assert await holds_own_record(direct, sidecar), (
        f"killed, restarted at once, and the etcd Raft leader moved {moves} times meanwhile:"
        f" {sidecar.node_id} was not registered (exit code"
        f" {sidecar.process.poll() if sidecar.process else None}; key held by"
        f" {await holder(direct, sidecar)}, before the kill by {old}). Last log line:"
        f" {last_words(sidecar)}"
    )
