"""Stopping and losing etcd, the way an adversary would: real `ringside run` processes, a real
3-member etcd, partitions from `tests/blackhole.py`.

- SIGTERM of a leader whose answers from etcd are lost (its resign lands, it never hears so):
  it must stop claiming before it talks to etcd, so its old epoch never overlaps the new one
  (safety rule 13);
- SIGTERM with every etcd endpoint blackholed: the process is gone within 3 s;
- two of three etcd members gone: within the validity budget every sidecar says it knows
  nothing current, names no leader, and the CLI exits 1 (rule 11);
- a node that never led does not claim, when it stops, to have handed leadership over.

The keys tampered with in etcd, and restarts after a crash, are in `test_etcd_trouble_keys.py`.
"""

from __future__ import annotations

import asyncio
import functools
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.blackhole import Cut, Proxies
from tests.cli_support import ringside
from tests.fleet import FLEET_TTL, Fleet, InvariantChecker, Sidecar
from tests.trouble_support import (
    Findings,
    converged,
    eventually,
    exit_code,
    heal_etcd,
    http_get,
    via,
)

TTL = FLEET_TTL
VALIDITY_BUDGET_S = TTL - 2.0  # lease TTL minus the default validity margin
STOP_GRACE_S = 0.5  # signal delivery and one turn of the sidecar's event loop, on a busy CI
EXIT_BOUND_S = 3.0  # SIGTERM to process gone, even with etcd unreachable (target: < 2 s)
NODES = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")


@pytest.fixture
def proxies() -> Iterator[Proxies]:
    with Proxies() as bank:
        yield bank


async def leader_first(fleet: Fleet, first: Sidecar, *others: tuple[str, bool]) -> int:
    """`first` (already added) leads alone, then `others` (name, eligible) join; returns the
    epoch `first` leads once all have converged on it."""
    await fleet.wait_converged([first.node_id], within_s=15)
    for name, eligible in others:
        fleet.add(name, eligible=eligible)
    everyone = [first.node_id, *(name for name, _ in others)]
    status = await fleet.wait_converged(everyone, within_s=15, leader_among=[first.node_id])
    epoch: int = status["epoch"]
    return epoch


async def wait_new_leader(
    fleet: Fleet, among: list[Sidecar], above: int, within_s: float
) -> tuple[str, int] | None:
    """Wait until every sidecar of `among` names one same leader (one of them, which says so
    itself) at an epoch above `above`; its (node id, epoch), or None."""
    found: list[tuple[str, int]] = []

    async def agreed() -> bool:
        answers = [await fleet.get(s, "/v1/leader") for s in among]
        named = {(a["leader"], a["epoch"]) for a in answers if a is not None}
        claims = [s for s, a in zip(among, answers, strict=True) if a and a["is_self"]]
        if None in answers or len(named) != 1 or len(claims) != 1:
            return False
        leader, epoch = named.pop()
        if leader != claims[0].node_id or not isinstance(epoch, int) or epoch <= above:
            return False
        found.append((leader, epoch))
        return True

    await eventually(agreed, within_s)
    return found[0] if found else None


@pytest.mark.parametrize("cut", [Cut.ANSWERS, Cut.BOTH], ids=["answers-lost", "both-ways"])
async def test_a_stopping_leader_cut_off_from_etcd_never_overlaps_its_successor(
    proxies: Proxies, fleet: Fleet, cut: Cut
) -> None:
    route = proxies.route(fleet.etcd.client_urls)
    leader = fleet.add(NODES[0], env=via(route))
    old_epoch = await leader_first(fleet, leader, (NODES[1], True), (NODES[2], True))
    others = [fleet.sidecars[n] for n in NODES[1:]]
    checker = InvariantChecker(fleet)
    async with checker:
        await checker.wait_claim(old_epoch)
        route.cut(cut)
        signalled = time.monotonic()
        leader.signal(signal.SIGTERM)
        # Answers lost: the resign lands, so the next candidate leads at once. Both ways cut:
        # nothing lands, the old lease has to expire first.
        within = 2.0 if cut is Cut.ANSWERS else TTL + 2.0
        new = await wait_new_leader(fleet, others, old_epoch, within)
        if new is None:
            checker.violations.append(
                f"no other node led an epoch above {old_epoch} within {within} s of the SIGTERM"
            )
        else:
            await checker.wait_claim(new[1])
        code = await exit_code(leader, 10)
        if code != 0:
            checker.violations.append(f"the stopped leader exited with {code}, not 0")
        final = await converged(fleet, NODES[1:], within_s=TTL + 2, leader_among=NODES[1:])
        if isinstance(final, str):
            checker.violations.append(final)
        late = [
            c.sent - signalled
            for c in checker.claims
            if c.node_id == leader.node_id and c.sent - signalled > STOP_GRACE_S
        ]
        if late:
            checker.violations.append(
                f"{leader.node_id} answered 'I lead epoch {old_epoch}' {len(late)} times to"
                f" requests sent {STOP_GRACE_S} to {max(late):.2f} s after its SIGTERM (route"
                f" {cut.value} cut); it must stop claiming before it talks to etcd"
            )
        # One line per kind of violation, however often the checker saw it.
        counts = Counter(checker.violations)
        checker.violations[:] = [f"{v} ({n} times)" if n > 1 else v for v, n in counts.items()]


@pytest.mark.parametrize("role", ["leader", "follower"])
async def test_sigterm_with_every_etcd_endpoint_blackholed_exits_within_3_s(
    proxies: Proxies, fleet: Fleet, role: str
) -> None:
    route = proxies.route(fleet.etcd.client_urls)
    if role == "leader":
        victim = fleet.add(NODES[0], env=via(route))
        await leader_first(fleet, victim, (NODES[1], True))
    else:
        first = fleet.add(NODES[0])
        await fleet.wait_converged([NODES[0]], within_s=15)
        victim = fleet.add(NODES[1], env=via(route))
        await fleet.wait_converged(NODES[:2], within_s=15, leader_among=[first.node_id])
    route.cut(Cut.BOTH)
    started = time.monotonic()
    victim.signal(signal.SIGTERM)
    code = await exit_code(victim, 20)
    took = time.monotonic() - started
    assert code is not None, f"the {role}, cut off from etcd, was still running 20 s after SIGTERM"
    assert code == 0, f"the {role}, cut off from etcd, exited {code} after SIGTERM (not 0)"
    assert took < EXIT_BOUND_S, (
        f"the {role}, every etcd endpoint blackholed, took {took:.1f} s to exit after SIGTERM"
        f" (exit code {code}); a supervisor stopping it waits that long (bound {EXIT_BOUND_S} s)"
    )


async def test_without_an_etcd_quorum_every_sidecar_says_it_knows_nothing_current(
    fleet: Fleet,
) -> None:
    leader = fleet.add(NODES[0])
    epoch = await leader_first(fleet, leader, (NODES[1], True))
    follower = fleet.sidecars[NODES[1]]
    findings = Findings("two of three etcd members killed")
    for member in await asyncio.to_thread(fleet.etcd.followers):
        await asyncio.to_thread(member.kill)

    bound = VALIDITY_BUDGET_S + 4.0
    last: dict[str, object] = {}

    async def stale_reported(sidecar: Sidecar) -> bool:
        code, body = await http_get(sidecar.url + "/ready")
        last[sidecar.node_id] = (code, body)
        reason = body.get("reason") if isinstance(body, dict) else None
        return code == 503 and str(reason).startswith("no answer from an etcd quorum for")

    for who, sidecar in (("a follower", follower), ("the former leader", leader)):
        findings.check(
            await eventually(functools.partial(stale_reported, sidecar), bound) is not None,
            f"{who}'s /ready did not say 'no answer from an etcd quorum for ...' within"
            f" {bound} s; it answered {last[sidecar.node_id]}",
        )
    _, document = await http_get(follower.url + "/v1/leader")
    expected = {"leader": None, "epoch": None, "is_self": False}
    seen = {k: document.get(k) for k in expected} if isinstance(document, dict) else document
    findings.check(seen == expected, f"a follower's /v1/leader still named a leader: {document}")
    known = document.get("last_known") if isinstance(document, dict) else None
    age = known.get("age_s") if isinstance(known, dict) else None
    findings.check(
        isinstance(known, dict)
        and (known.get("leader"), known.get("epoch")) == (leader.node_id, epoch)
        and isinstance(age, int | float) and age >= 0,
        f"a follower's /v1/leader did not report the last known leader {leader.node_id}"
        f" (epoch {epoch}) with its age: last_known={known!r}",
    )  # fmt: skip
    _, former = await http_get(leader.url + "/v1/leader")
    findings.check(
        isinstance(former, dict) and former.get("leader") is None and not former.get("is_self"),
        f"the former leader's /v1/leader still named a leader: {former}",
    )
    cli = await asyncio.gather(
        ringside("leader", "--sidecar", follower.url), ringside("status", "--sidecar", follower.url)
    )
    for command, result in zip(("ringside leader", "ringside status"), cli, strict=True):
        findings.check(
            result.returncode == 1,
            f"`{command}` exited {result.returncode} (not 1) and printed {result.stdout!r}",
        )

    await heal_etcd(fleet.etcd)
    status = await converged(fleet, NODES[:2], within_s=3 * TTL, leader_among=NODES[:2])
    if findings.check(not isinstance(status, str), f"after healing etcd: {status}"):
        for sidecar in (leader, follower):
            ready = await eventually(functools.partial(ready_200, sidecar), 5.0)
            findings.check(ready is not None, f"{sidecar.node_id} not ready after healing etcd")
    findings.verify()


async def ready_200(sidecar: Sidecar) -> bool:
    code, _ = await http_get(sidecar.url + "/ready")
    return code == 200


async def test_only_a_node_that_led_says_it_handed_leadership_over(fleet: Fleet) -> None:
    leader = fleet.add(NODES[0])
    epoch = await leader_first(fleet, leader, (NODES[1], True), ("vast-29118471", False))
    findings = Findings("log lines of stopped sidecars")
    for name in (NODES[1], "vast-29118471"):  # an eligible follower, then a non-eligible node
        sidecar = fleet.sidecars[name]
        sidecar.signal(signal.SIGTERM)
        findings.check(await exit_code(sidecar, 10) == 0, f"{name} did not exit 0 on SIGTERM")
        lines = [line for line in sidecar.log().splitlines() if "handed over" in line]
        findings.check(not lines, f"{name} never led, yet logged at SIGTERM: {' | '.join(lines)}")
    leader.signal(signal.SIGTERM)
    findings.check(await exit_code(leader, 10) == 0, f"{leader.node_id} did not exit 0")
    said = [line for line in leader.log().splitlines() if "handed over" in line]
    findings.check(
        any(re.search(rf"epoch\W*{epoch}\b", line) for line in said),
        f"{leader.node_id} led epoch {epoch} but its stop line does not name that epoch as"
        f" handed over: {said}",
    )
    findings.verify()
