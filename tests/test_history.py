"""The cluster history in etcd (decision 0018) and the flap report: recorded by the leader,
fenced by its epoch, bounded, read back as untrusted input, and readable from a laptop with
only etcd access after every sidecar that saw the events is gone."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import aiohttp
import pytest

from sidecar.cli.cluster import FlapWindow
from sidecar.election import Campaign
from sidecar.event_log import EventLog
from sidecar.events import ClusterEvent, Recorder
from sidecar.flaps import flap_report, parse_since
from sidecar.history_entries import entry_key
from sidecar.journal import Bounds, Journal, read_history
from sidecar.keys import Keys
from sidecar.store.memory import MemoryStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.cli_support import ringside
from tests.fleet import Fleet, InvariantChecker
from tests.waiting import wait_for

# --- the journal on the in-memory store ---------------------------------------------------


async def leading(store: MemoryStore, keys: Keys, log: EventLog, node: str = "n1") -> Campaign:
    """A candidate key, as a leader's (the journal's writes are fenced by it), and the
    leader's own change to it in its log (which backs its entries, decision 0023). The store
    is moved past revision 100 first: an entry reports what happened before it was written."""
    while await store.put("/filler", b"") < 100:
        pass
    revision = await store.put(keys.candidate(node), node.encode())
    log.add(event("leader_changed", revision, 99.0, leader=node, epoch=revision))
    return Campaign(keys.candidate(node), 0, revision)


def NOW() -> float:  # a clock: the events below are minutes old, not decades
    return 1000.0


def event(kind: str, revision: int, at: float, **detail: Any) -> ClusterEvent:
    return ClusterEvent(kind, revision, detail, at)


def changes(found: list[ClusterEvent]) -> list[tuple[str, int]]:
    return [(e.kind, e.revision) for e in found if e.kind != "leader_changed"]


async def test_the_leader_records_events_and_a_deposed_one_records_nothing(
    store: MemoryStore, cluster: str
) -> None:
    keys, log = Keys(cluster), EventLog()
    journal = Journal(store, keys, log, node_id="n1", clock=NOW)
    log.add(event("member_joined", 10, 100.0, node_id="n2"))
    log.add(event("key_restored", 11, 101.0, what="member", key="k"))  # local: not recorded
    log.add(event("member_joined", 12, 102.0, node_id="n3", initial=True))  # found at start
    campaign = await leading(store, keys, log)
    await journal.step(campaign)
    found = await read_history(store, keys)
    assert [(e.kind, e.revision, e.detail) for e in found] == [
        ("member_joined", 10, {"node_id": "n2"}),
        ("leader_changed", campaign.epoch, {"leader": "n1", "epoch": campaign.epoch}),
    ]
    assert found[0].recorded_by == (Recorder("n1", campaign.epoch),)  # who, at which epoch
    stored = (await store.get(entry_key(keys, "n1", found[0]))).kvs[0].value
    assert json.loads(stored)["epoch"] == campaign.epoch

    await store.delete(campaign.key)  # leadership lost: the fence no longer holds
    log.add(event("member_left", 20, 110.0, node_id="n2", reason="expired"))
    await journal.step(campaign)
    assert len(await read_history(store, keys)) == 2


async def test_a_new_leader_records_what_happened_while_nobody_led(
    store: MemoryStore, cluster: str
) -> None:
    keys = Keys(cluster)
    first_log, second_log = EventLog(), EventLog()
    first = Journal(store, keys, first_log, node_id="n1", clock=NOW)
    second = Journal(store, keys, second_log, node_id="n2", clock=NOW)
    for log in (first_log, second_log):
        log.add(event("member_joined", 10, 100.0, node_id="n3"))
    await first.step(await leading(store, keys, first_log, "n1"))
    # n1 crashes; n2 saw it as a follower, and leads afterwards.
    second_log.add(event("member_left", 20, 110.0, node_id="n1", reason="expired"))
    await second.step(None)  # a follower records nothing
    assert changes(await read_history(store, keys)) == [("member_joined", 10)]
    second_campaign = await leading(store, keys, second_log, "n2")
    await second.step(second_campaign)
    found = await read_history(store, keys)
    assert changes(found) == [("member_joined", 10), ("member_left", 20)]
    # n2 recorded what it saw, the join too: one event, shown once, with both writers.
    assert [e.writers for e in found if e.kind != "leader_changed"] == ["n1+n2", "n2"]
    leaders = [e.detail["leader"] for e in found if e.kind == "leader_changed"]
    assert leaders == ["n1", "n2"]


async def test_the_history_is_bounded_by_count_and_age(store: MemoryStore, cluster: str) -> None:
    keys, log = Keys(cluster), EventLog()
    now = [1000.0]
    journal = Journal(
        store, keys, log, node_id="n1", bounds=Bounds(count=5, age_s=100.0), clock=lambda: now[0]
    )
    for i in range(8):
        log.add(event("member_joined", 10 + i, 950.0 + i, node_id=f"n{i}"))
    campaign = await leading(store, keys, log)
    await journal.step(campaign)  # records 9 (with its leader change), trims the 4 oldest
    assert changes(await read_history(store, keys)) == [("member_joined", r) for r in range(14, 18)]
    now[0] = 955.5 + 100.0  # revisions 14 and 15 (at 954-955) are now past the age
    assert await journal.trim(campaign) == 2
    assert changes(await read_history(store, keys)) == [
        ("member_joined", 16),
        ("member_joined", 17),
    ]


async def test_a_leader_change_stays_while_its_epoch_has_entries(
    store: MemoryStore, cluster: str
) -> None:
    """Trimming oldest first would take the leader's own change before the entries it backs;
    it stays while they do."""
    keys, log = Keys(cluster), EventLog()
    now = [1000.0]
    journal = Journal(
        store, keys, log, node_id="n1", bounds=Bounds(age_s=100.0), clock=lambda: now[0]
    )
    campaign = await leading(store, keys, log)  # its change is at 99.0
    await journal.step(campaign)
    later = await store.put("/filler", b"")
    log.add(event("member_joined", later, 950.0, node_id="n9"))
    await journal.step(campaign)
    now[0] = 99.0 + 100.0 + 500.0  # the change is past the age, the join is not
    assert await journal.trim(campaign) == 0  # leading at that epoch: the change stays
    await store.delete(campaign.key)  # n1 leads again, at a later epoch
    again = Campaign(campaign.key, 0, await store.put(campaign.key, b"n1"))
    assert await journal.trim(again) == 0  # the join of the old epoch still needs it
    assert changes(await read_history(store, keys)) == [("member_joined", later)]
    now[0] = 950.0 + 100.5  # both past the age: the join goes, then the change it needed
    assert [await journal.trim(again) for _ in range(3)] == [1, 1, 0]
    assert (await store.get(keys.history, prefix=True)).kvs == ()


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1, 2]",
        b'{"kind": "rm -rf", "revision": 5, "at": 1.0}',
        b'{"kind": "member_left", "revision": -5, "at": 1.0}',
        b'{"kind": "member_left", "revision": true, "at": 1.0}',
        b'{"kind": "member_left", "revision": 5, "at": "yesterday"}',
        b'{"kind": "member_left", "revision": 5, "at": 1.0, "detail": [1]}',
        b'{"kind": "member_left", "revision": 5, "at": 1e300}',
        b"x" * 5000,
    ],
)
async def test_values_that_are_no_event_are_skipped(
    store: MemoryStore, cluster: str, value: bytes
) -> None:
    keys = Keys(cluster)
    while await store.put("/filler", b"") < 10:  # entries report what happened before them
        pass
    await store.put(keys.history + "n1/00000000000000000005-member_left-n1", value)
    declared = event("leader_changed", 4, 1.0, leader="n1", epoch=4)
    good = event("member_left", 6, 2.0, node_id="n2", reason="stopped", nested=None)
    for entry in (declared, good):
        document = {**entry.document(), "by": "n1", "epoch": 4}
        await store.put(entry_key(keys, "n1", entry), json.dumps(document).encode())
    assert [e.revision for e in await read_history(store, keys)] == [4, 6]


def test_the_flap_report_counts_absences_and_reasons() -> None:
    events = [
        event("member_left", 10, 100.0, node_id="vast-1", reason="expired"),
        event("member_joined", 11, 130.0, node_id="vast-1"),
        event("member_left", 12, 200.0, node_id="vast-1", reason="expired"),
        event("member_joined", 13, 210.0, node_id="vast-1"),
        event("member_left", 14, 300.0, node_id="hetzner-cpu2", reason="stopped"),
        event("member_joined", 15, 150.0, node_id="lambda-3"),  # joined, never left: not listed
    ]
    report = flap_report(events, now=400.0)
    assert [f.document() for f in report] == [
        {
            "node_id": "vast-1", "left": 2, "returned": 2, "absent_s": 40.0, "longest_s": 30.0,
            "reasons": {"expired": 2}, "absent_now": False,
        },
        {
            "node_id": "hetzner-cpu2", "left": 1, "returned": 0, "absent_s": 100.0,
            "longest_s": 100.0, "reasons": {"stopped": 1}, "absent_now": True,
        },
    ]  # fmt: skip


@pytest.mark.parametrize("text", ["1", "h", "-1h", "1.5h", "1w", "\uff11h", "9999999999s", ""])
def test_a_duration_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration like 90s, 15m, 1h or 7d"):
        parse_since(text)


# --- real sidecars, real etcd --------------------------------------------------------------


async def test_history_outlives_the_sidecars_that_saw_it(
    fleet: Fleet, etcd: LocalEtcdCluster
) -> None:
    voters = ["n1", "n2", "n3"]
    for node in voters:
        fleet.add(node)
    async with InvariantChecker(fleet):
        first = await fleet.wait_converged(voters, within_s=20)
        stopped = fleet.add("vast-1", eligible=False)
        crashed = fleet.add("vast-2", eligible=False)
        everyone = [*voters, "vast-1", "vast-2"]
        await fleet.wait_converged(everyone, within_s=20)
        stopped.signal(signal.SIGTERM)
        assert stopped.wait_exit(5) == 0
        crashed.signal(signal.SIGKILL)
        crashed.wait_exit(5)
        old = fleet.sidecars[first["node_id"]]
        old.signal(signal.SIGKILL)  # the leader that saw the joins and the stop
        old.wait_exit(5)
        rest = [n for n in voters if n != old.node_id]
        second = await fleet.wait_converged(rest, within_s=fleet.lease_ttl + 5)
        via = fleet.sidecars[second["node_id"]]

        async def recorded() -> bool:
            answer = await fleet.get(via, "/v1/history")
            kinds = {(e["kind"], e["detail"].get("node_id")) for e in (answer or {})["events"]}
            return ("member_left", "vast-2") in kinds and ("member_left", old.node_id) in kinds

        await wait_for(recorded, 10, what="the new leader did not record the crashes")

    await fleet.close()  # every sidecar gone: a laptop with etcd access reads what happened
    direct = ("--etcd", ",".join(etcd.client_urls), "--cluster", fleet.cluster)
    shown = await ringside("events", "--since", "10m", *direct)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ by n[123](\+n[123])* +"  # who recorded it
    assert any(re_match(rf"{stamp}member vast-1 joined", line) for line in lines), lines
    assert any(re_match(rf"{stamp}member vast-1 left \(stopped\)", line) for line in lines)
    assert any(re_match(rf"{stamp}member vast-2 left \(lease expired\)", line) for line in lines)
    crash = rf"{stamp}leader changed: {second['node_id']} \(epoch {second['epoch']}\): .*\[crash\]"
    assert any(re_match(crash, line) for line in lines), lines

    as_json = await ringside("events", "--since", "10m", "--node", "vast-2", "-o", "json", *direct)
    assert as_json.returncode == 0, as_json.stderr
    about = json.loads(as_json.stdout)
    assert [e["kind"] for e in about] == ["member_joined", "member_left"]
    assert about[1]["detail"]["reason"] == "expired"
    assert {r["node_id"] for r in about[1]["recorded_by"]} <= set(voters)  # who recorded it

    report = await ringside("flaps", "--since", "1h", "-o", "json", *direct)
    assert report.returncode == 0, report.stderr
    by_node = {f["node_id"]: f for f in json.loads(report.stdout)}
    assert by_node["vast-1"]["reasons"] == {"stopped": 1}
    assert by_node["vast-2"]["reasons"] == {"expired": 1}
    assert by_node["vast-2"]["absent_now"] is True
    table = await ringside("flaps", "--since", "1h", *direct)
    assert table.stdout.splitlines()[0].split() == [
        "NODE", "LEFT", "BACK", "ABSENT", "LONGEST", "WHY", "NOW"
    ]  # fmt: skip


def re_match(pattern: str, line: str) -> bool:
    return re.fullmatch(pattern, line) is not None


async def test_bad_history_requests_get_a_400_or_a_one_line_error(fleet: Fleet) -> None:
    sidecar = fleet.add("n1")
    await fleet.wait_converged(["n1"], within_s=20)
    async with aiohttp.ClientSession() as session:
        for query in ("node=Not%20A%20Node", "since=yesterday", "since=-5"):
            async with session.get(f"{sidecar.url}/v1/history?{query}") as answer:
                assert answer.status == 400, query
                assert "error" in await answer.json()
    bad = await ringside("events", "--since", "forever", "--sidecar", sidecar.url)
    assert bad.returncode == 2
    assert "'forever' is not a duration like 90s, 15m, 1h or 7d" in bad.stderr
    assert "Traceback" not in bad.stderr
    quiet = await ringside("events", "--since", "1s", "--sidecar", sidecar.url)
    assert quiet.returncode == 0, quiet.stderr


def test_watch_groups_a_flapping_node() -> None:
    window = FlapWindow(times=3, window_s=120.0)
    said = [
        window.saw(event("member_left", 10 + i, 1000.0 + 40 * i, node_id="vast-29118471"))
        for i in range(4)
    ]
    assert said == [
        None,
        None,
        "vast-29118471 flapped 3 times in 1 min",
        "vast-29118471 flapped 4 times in 2 min",  # all four within the 120 s window
    ]
    assert window.saw(event("member_joined", 20, 1200.0, node_id="vast-29118471")) is None
