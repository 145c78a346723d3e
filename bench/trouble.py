"""Getting out of trouble: how fast a sidecar leaves, heals and comes back.

Three scenarios on real `ringside run` processes (`tests/fleet.py`) against the bench's etcd:

- **SIGTERM while every etcd endpoint is blackholed.** A sidecar's own route to etcd
  (`tests/blackhole.py`) is cut both ways, so every byte it sends vanishes; then SIGTERM.
  Timed from the signal to the process exit, for the leader and for a follower. The design's
  budget: out within 2 s whatever etcd does (safety rule 13).
- **Self-heal of a deleted key.** An outside client deletes the sidecar's member key, or its
  candidate key; timed from the delete until the sidecar has written it again (a watch of our
  own on the cluster prefix sees the put). The design's budget: one keepalive period
  (TTL/3) + 1 s (safety rule 12).
- **Restart after a crash.** kill -9, then the same sidecar (same node id, same lock file) is
  started at once; timed from the start until the new process's record (its pid) is in the
  member key. Plain, with the etcd Raft leader killed between the crash and the restart, and,
  as the floor, a restart after a clean SIGTERM (no predecessor lease to deal with). Today a
  restart waits out its predecessor's lease (up to one TTL); the target is 1 s once the
  predecessor is provably dead.

Every wait has a deadline: a trial that runs out is counted as "not done within N s" and the
run carries on; a scenario that cannot go on (its fleet never converges again) is reported
with the figures it got so far. An invariant checker polls every sidecar throughout; what it
flags is reported, not raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.sidecars import leader_of
from sidecar.compat import UTC
from sidecar.keys import Keys
from sidecar.records import MemberRecord
from sidecar.store.etcd import EtcdStore
from sidecar.store.model import Compare, Delete, EventType, KeyValue
from sidecar.testing.localcluster import EtcdMember, LocalEtcdCluster
from tests.blackhole import Cut, Proxies, Route
from tests.fleet import FLEET_TTL, Fleet, InvariantChecker, Sidecar

EXIT_LIMIT_S = 10.0  # a SIGTERMed sidecar still running after this is killed and counted
HEAL_LIMIT_S = 10.0  # a deleted key not written again by then: "not healed within 10 s"
CUT_SETTLE_S = 0.5  # between cutting the route and the SIGTERM: requests are in flight
WARM_UP_S = 0.3  # for a new watch stream to open before anything is timed
POLL_S = 0.01
# pytest.fail (used by the fleet's convergence wait) raises a BaseException subclass.
NotConverged = pytest.fail.Exception


@dataclass
class Timed:
    """One timed quantity over several trials, some of which may run out of time.

    A trial that runs out counts as longer than `limit_s`: the median and the worst include
    it (as "> limit"), so a figure is never made to look better by dropping its failures.
    """

    name: str
    target_s: float
    limit_s: float
    strict: bool = False  # target is `< target_s` (else `<= target_s`)
    miss: str = "not done within"  # says what a trial that ran out did not do by the limit
    samples: list[float] = field(default_factory=list)
    timeouts: int = 0
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{'<' if self.strict else '<='} {self.target_s:.3g} s"

    def add(self, sample: float | None) -> None:
        if sample is None:
            self.timeouts += 1
        else:
            self.samples.append(sample)

    def _summary(self) -> tuple[float | None, float | None]:
        values = sorted(self.samples) + [math.inf] * self.timeouts
        if not values:
            return None, None
        return statistics.median(values), values[-1]

    @property
    def met(self) -> bool | None:
        """Whether every trial finished within the target (None: no trial at all)."""
        _, worst = self._summary()
        if worst is None:
            return None
        return worst < self.target_s if self.strict else worst <= self.target_s

    def as_json(self) -> dict[str, Any]:
        median, worst = self._summary()

        def finite(value: float | None) -> float | None:
            return round(value, 4) if value is not None and math.isfinite(value) else None

        return {
            "name": self.name,
            "unit": "s",
            "trials": len(self.samples) + self.timeouts,
            "timeouts": self.timeouts,
            "limit_s": self.limit_s,
            "miss": self.miss,
            # None with trials > 0: more than the limit (a trial ran out)
            "median": finite(median),
            "worst": finite(worst),
            "target": self.target,
            "target_s": round(self.target_s, 4),
            "met": self.met,
            "samples": [round(s, 4) for s in self.samples],
            "errors": self.errors,
            "note": " ".join(self.notes),
        }


# --- watching etcd ourselves ------------------------------------------------------------------


class Recorder:
    """Every put under `prefix`, with the monotonic time our own watch delivered it.

    One stream, open before anything is timed, so a sidecar's write is seen within etcd's
    put -> watch floor (about 2 ms here) of landing.
    """

    def __init__(self, endpoints: Iterable[str], prefix: str) -> None:
        self.store = EtcdStore.connect(list(endpoints))
        self.prefix = prefix
        self.puts: list[tuple[float, KeyValue]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._watch(), name="bench-recorder")
        await asyncio.sleep(WARM_UP_S)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.store.close()

    async def _watch(self) -> None:
        try:
            async with self.store.watch(self.prefix, prefix=True) as batches:
                async for batch in batches:
                    for event in batch.events:
                        if event.type is EventType.PUT:
                            self.puts.append((time.monotonic(), event.kv))
                    self._changed.set()
        finally:
            self._changed.set()  # wake a waiter, who then sees the watch has ended

    async def first(
        self, match: Callable[[KeyValue], bool], *, after_revision: int, within_s: float
    ) -> float | None:
        """When the first put after `after_revision` that `match`es was seen (None: none
        within `within_s`). Raises what ended the watch, if it ended."""
        deadline = time.monotonic() + within_s
        seen = 0
        while True:
            for at, kv in self.puts[seen:]:
                if kv.mod_revision > after_revision and match(kv):
                    return at
            seen = len(self.puts)
            if self._task is not None and self._task.done():
                self._task.result()  # raises why it ended
                raise RuntimeError("the bench's own watch ended")
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


def member_written_by(keys: Keys, node_id: str, pid: int) -> Callable[[KeyValue], bool]:
    """The member key holds a record of process `pid`, on a live lease."""
    key = keys.member(node_id)

    def match(kv: KeyValue) -> bool:
        if kv.key != key or kv.lease == 0:
            return False
        record = MemberRecord.decode(kv.value)
        return record is not None and record.pid == pid

    return match


def candidate_of(keys: Keys, node_id: str) -> Callable[[KeyValue], bool]:
    """A candidate key of `node_id` on a live lease: named after the node or its lease, with
    the node id as its value (or a JSON value naming it)."""

    def match(kv: KeyValue) -> bool:
        if not kv.key.startswith(keys.election) or kv.lease == 0:
            return False
        if kv.key == keys.election + node_id:
            return True
        text = kv.value.decode(errors="replace").strip()
        if text == node_id:
            return True
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            return isinstance(value, dict) and value.get("node_id") == node_id
        return False

    return match


async def _find(
    store: EtcdStore, prefix: str, match: Callable[[KeyValue], bool], within_s: float
) -> KeyValue:
    deadline = time.monotonic() + within_s
    while True:
        found = [kv for kv in (await store.get(prefix, prefix=True)).kvs if match(kv)]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no key under {prefix} as expected within {within_s} s")
        await asyncio.sleep(0.05)


async def _delete_exactly(store: EtcdStore, kv: KeyValue) -> int:
    """Delete `kv` if it is still that version; the revision of the delete."""
    result = await store.txn([Compare.modified_at(kv.key, kv.mod_revision)], [Delete(kv.key)])
    if not result.succeeded:
        raise RuntimeError(f"{kv.key} changed before the bench could delete it")
    return result.header.revision


# --- the fleet --------------------------------------------------------------------------------


@dataclass
class Section:
    """What the whole section reports besides its figures."""

    violations: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _short(error: BaseException, limit: int = 400) -> str:
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.asynccontextmanager
async def _checked(fleet: Fleet, section: Section, scenario: str) -> AsyncIterator[None]:
    """The fleet's invariant checker over the block; violations are reported, not raised."""
    checker: InvariantChecker[Sidecar] = InvariantChecker(fleet)
    await checker.__aenter__()
    try:
        yield
    finally:
        with contextlib.suppress(AssertionError):
            await checker.__aexit__(None, None, None)
        section.violations += [f"{scenario}: {v}" for v in checker.violations]


def _exit_time(sidecar: Sidecar, within_s: float) -> float | None:
    """Block until the process exits; when it did (None: still running after `within_s`)."""
    assert sidecar.process is not None
    try:
        sidecar.process.wait(within_s)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic()


def _stop(sidecar: Sidecar, how: signal.Signals = signal.SIGTERM) -> None:
    """End the process (SIGTERM, then SIGKILL after the exit limit)."""
    if not sidecar.running:
        return
    assert sidecar.process is not None
    sidecar.signal(how)
    try:
        sidecar.process.wait(EXIT_LIMIT_S)
    except subprocess.TimeoutExpired:
        sidecar.process.kill()
        sidecar.process.wait()


async def _converge(fleet: Fleet, ttl: int, restart: Sidecar | None = None) -> None:
    """Every sidecar running and agreeing on all members and one leader; `restart` (or, if the
    fleet does not agree in a while, every sidecar that is off) is restarted first."""
    names = [s.node_id for s in fleet.sidecars.values()]
    if restart is None:
        with contextlib.suppress(NotConverged):
            await fleet.wait_converged(names, within_s=ttl + 5)
            return
        restart = next((s for s in fleet.sidecars.values() if not s.running), None)
    if restart is not None:
        await asyncio.to_thread(_stop, restart)
        restart.start()
    # A restart after a crash or a cut-off stop waits out its predecessor's lease.
    await fleet.wait_converged(names, within_s=2 * ttl + 10)


def _pid(sidecar: Sidecar) -> int:
    assert sidecar.process is not None
    return sidecar.process.pid


async def _scenario(
    section: Section,
    name: str,
    figures: list[Timed],
    body: Callable[[], Awaitable[None]],
) -> None:
    """Run one scenario; if it cannot go on, say so in the section and in each figure."""
    try:
        await body()
    except (Exception, NotConverged) as e:
        message = f"{name}: stopped early: {_short(e)}"
        section.errors.append(message)
        for figure in figures:
            figure.errors.append(message)


# --- 1. SIGTERM with every etcd endpoint blackholed -------------------------------------------


async def sigterm_blackholed(
    etcd: LocalEtcdCluster, workdir: Path, section: Section, *, trials: int, ttl: int = FLEET_TTL
) -> list[Timed]:
    """Cut a sidecar off from every etcd endpoint, SIGTERM it, time until it has exited;
    the leader and a follower in turn."""
    leader = Timed(
        f"SIGTERM -> exit, leader, etcd blackholed (TTL {ttl} s)", 2.0, EXIT_LIMIT_S,
        strict=True, miss="still running after",
    )  # fmt: skip
    follower = Timed(
        f"SIGTERM -> exit, follower, etcd blackholed (TTL {ttl} s)", 2.0, EXIT_LIMIT_S,
        strict=True, miss="still running after",
    )  # fmt: skip
    figures = [leader, follower]
    with Proxies() as proxies:
        fleet = Fleet(etcd, workdir, lease_ttl=ttl)
        routes: dict[str, Route] = {}
        for name in ("hetzner-cpu1", "hetzner-cpu2"):
            routes[name] = route = proxies.route(etcd.client_urls)
            fleet.add(name, env={"RINGSIDE_ETCD_ENDPOINTS": ",".join(route.urls)})
        claimed = 0
        codes: dict[str, list[int]] = {leader.name: [], follower.name: []}

        async def body() -> None:
            nonlocal claimed
            await _converge(fleet, ttl)
            async with _checked(fleet, section, "sigterm"):
                for trial in range(2 * trials):
                    figure = figures[trial % 2]
                    head, _ = await leader_of(fleet, within_s=10)
                    victim = head if figure is leader else next(
                        s for s in fleet.running() if s is not head
                    )  # fmt: skip
                    route = routes[victim.node_id]
                    route.cut(Cut.BOTH)
                    await asyncio.sleep(CUT_SETTLE_S)
                    if figure is leader:
                        answer = await fleet.get(victim, "/v1/leader")
                        claimed += bool(answer and answer.get("is_self"))
                    started = time.monotonic()
                    victim.signal(signal.SIGTERM)
                    exited = await asyncio.to_thread(_exit_time, victim, EXIT_LIMIT_S)
                    figure.add(exited - started if exited is not None else None)
                    if exited is None:
                        await asyncio.to_thread(_stop, victim, signal.SIGKILL)
                    else:
                        assert victim.process is not None
                        codes[figure.name].append(victim.process.returncode)
                    route.heal()
                    await _converge(fleet, ttl, restart=victim)

        try:
            await _scenario(section, "sigterm", figures, body)
        finally:
            await fleet.close()
            # Let the proxied connections of the dead sidecars end by themselves: the proxies
            # would otherwise cancel them at close, and asyncio logs every one.
            for route in routes.values():
                route.heal()
            await asyncio.sleep(0.5)
        leader.notes.append(
            f"Route cut {CUT_SETTLE_S} s before the signal; the leader still claimed "
            f"leadership at the signal in {claimed} of {len(leader.samples) + leader.timeouts} "
            "trials."
        )
        for figure in figures:
            odd = [code for code in codes[figure.name] if code != 0]
            if odd:
                figure.notes.append(f"Exit codes other than 0: {odd}.")
    return figures


# --- 2. self-heal of a deleted member or candidate key ----------------------------------------


async def self_heal(
    etcd: LocalEtcdCluster, workdir: Path, section: Section, *, trials: int, ttl: int = FLEET_TTL
) -> list[Timed]:
    """Delete the leader's member key, or its candidate key, from outside; time until the
    sidecar has written it again."""
    target = ttl / 3 + 1
    member = Timed(
        f"member key deleted -> written again (TTL {ttl} s)", target, HEAL_LIMIT_S,
        miss="not healed within",
    )  # fmt: skip
    candidate = Timed(
        f"candidate key deleted -> written again (TTL {ttl} s)", target, HEAL_LIMIT_S,
        miss="not healed within",
    )  # fmt: skip
    figures = [member, candidate]
    fleet = Fleet(etcd, workdir, lease_ttl=ttl)
    keys = Keys(fleet.cluster)
    for name in ("hetzner-cpu1", "hetzner-cpu2"):
        fleet.add(name)
    store = EtcdStore.connect(etcd.client_urls)
    same_lease = 0

    async def body() -> None:
        nonlocal same_lease
        await _converge(fleet, ttl)
        async with Recorder(etcd.client_urls, keys.prefix) as recorder, _checked(
            fleet, section, "self-heal"
        ):  # fmt: skip
            for trial in range(2 * trials):
                figure = figures[trial % 2]
                victim, _ = await leader_of(fleet, within_s=10)
                if figure is member:
                    match = member_written_by(keys, victim.node_id, _pid(victim))
                    prefix = keys.members
                else:
                    match = candidate_of(keys, victim.node_id)
                    prefix = keys.election
                before = await _find(store, prefix, match, within_s=10)
                started = time.monotonic()
                revision = await _delete_exactly(store, before)
                healed = await recorder.first(match, after_revision=revision, within_s=HEAL_LIMIT_S)
                figure.add(healed - started if healed is not None else None)
                if healed is not None and figure is member:
                    now = (await store.get(before.key)).kvs
                    same_lease += bool(now and now[0].lease == before.lease)
                # Not healed: the sidecar is stopped (SIGTERM) and started again.
                await _converge(fleet, ttl, restart=None if healed is not None else victim)

    try:
        await _scenario(section, "self-heal", figures, body)
    finally:
        await store.close()
        await fleet.close()
    for figure in figures:
        figure.notes.append(
            "The victim is the leader. Timed from sending the delete to our own watch seeing "
            "the key put again; a trial that did not heal ends with a restart of the victim."
        )
    if member.samples:
        member.notes.append(
            f"Written again on the same lease in {same_lease} of {len(member.samples)} heals."
        )
    return figures


# --- 3. restart after kill -9 -----------------------------------------------------------------


async def _raft_leader_back(store: EtcdStore, urls: list[str], old: int, within_s: float) -> float:
    """When one of `urls` first reports a Raft leader other than `old` (polling)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answers = await asyncio.gather(
            *(store.endpoint_status(url) for url in urls), return_exceptions=True
        )
        for answer in answers:
            if not isinstance(answer, BaseException) and answer.leader not in (0, old):
                return time.monotonic()
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"etcd elected no new Raft leader within {within_s} s")


class _Restarts:
    """The restart scenario: one victim sidecar, and a second one so a leader remains."""

    def __init__(self, etcd: LocalEtcdCluster, workdir: Path, ttl: int) -> None:
        self.etcd, self.ttl, self.limit = etcd, ttl, 2 * ttl + 10
        self.fleet = Fleet(etcd, workdir, lease_ttl=ttl)
        self.keys = Keys(self.fleet.cluster)
        self.victim = self.fleet.add("hetzner-cpu1")
        self.fleet.add("hetzner-cpu2")
        self.elections: list[float] = []

        def timed(what: str) -> Timed:
            return Timed(f"{what} (TTL {ttl} s)", 1.0, self.limit, miss="not registered within")

        self.plain = timed("kill -9, restart -> registered")
        self.own = timed("same, timed from the sidecar's start-up line -> registered")
        self.raft = timed("kill -9, etcd Raft leader killed, restart -> registered")
        self.after_raft = timed("same, timed from etcd's new Raft leader -> registered")
        self.clean = timed("floor: SIGTERM, restart -> registered")
        self.figures = [self.plain, self.own, self.raft, self.after_raft, self.clean]

    async def _raft_leader(self) -> tuple[EtcdMember, int]:
        """The etcd Raft leader member and its member id."""
        member = await asyncio.to_thread(self.etcd.leader)
        probe = EtcdStore.connect([member.client_url])
        try:
            return member, (await probe.endpoint_status(member.client_url)).header.member_id
        finally:
            await probe.close()

    async def trial(self, how: str) -> None:
        """`how`: kill, kill-raft (the etcd Raft leader too, before the restart) or sigterm."""
        figure = {"kill": self.plain, "kill-raft": self.raft, "sigterm": self.clean}[how]
        killed: EtcdMember | None = None
        endpoints = self.etcd.client_urls
        if how == "kill-raft":
            killed, old_leader = await self._raft_leader()
            endpoints = [m.client_url for m in self.etcd.members if m is not killed]
        victim = self.victim
        registered: float | None = None
        async with Recorder(endpoints, self.keys.members) as recorder:
            how_stop = signal.SIGTERM if how == "sigterm" else signal.SIGKILL
            await asyncio.to_thread(_stop, victim, how_stop)
            election: asyncio.Task[float] | None = None
            if killed is not None:
                await asyncio.to_thread(killed.kill)
                election = asyncio.create_task(
                    _raft_leader_back(recorder.store, endpoints, old_leader, self.limit)
                )
            started = time.monotonic()
            victim.start()
            try:
                registered = await recorder.first(
                    member_written_by(self.keys, victim.node_id, _pid(victim)),
                    after_revision=0,
                    within_s=self.limit,
                )
                figure.add(registered - started if registered is not None else None)
                if how == "kill":
                    self.own.add(_since_start_line(victim, registered))
                if election is not None:
                    await self._after_election(election, started, registered)
            finally:
                if election is not None:
                    election.cancel()
                    await asyncio.gather(election, return_exceptions=True)
                if killed is not None:
                    await asyncio.to_thread(self.etcd.heal)
        await _converge(self.fleet, self.ttl, restart=None if registered is not None else victim)

    async def _after_election(
        self, election: asyncio.Task[float], started: float, registered: float | None
    ) -> None:
        try:
            elected = await election
        except asyncio.TimeoutError as e:
            self.after_raft.errors.append(_short(e))
            return
        self.elections.append(elected - started)
        self.after_raft.add(registered - elected if registered is not None else None)

    def explain(self) -> None:
        self.own.notes.append(
            "From the new process's first log line ('ringside starting', after Python has "
            "imported everything) to our watch seeing its record: the sidecar's own share."
        )
        for figure in (self.plain, self.raft, self.clean):
            figure.notes.append(
                "Timed from starting the new process (Python start-up included) to our own "
                "watch seeing its record (its pid) in the member key."
            )
        if self.elections:
            self.raft.notes.append(
                f"etcd's own Raft election ended {statistics.median(self.elections):.2f} s "
                "(median) after the restart in these trials: no sidecar can register before."
            )
        self.clean.notes.append(
            "The predecessor revoked its lease at SIGTERM: nothing to wait out. This is what "
            "a restart costs at best on this machine."
        )


def _since_start_line(sidecar: Sidecar, registered: float | None) -> float | None:
    """Seconds from the sidecar's last "ringside starting" log line to `registered` (a
    monotonic time), through the wall clock the log is stamped with; None if either is
    missing."""
    if registered is None:
        return None
    starts = [line for line in sidecar.log().splitlines() if "ringside starting" in line]
    if not starts:
        return None
    try:
        stamp = datetime.strptime(starts[-1].split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None
    started_wall = stamp.replace(tzinfo=UTC).timestamp()
    registered_wall = time.time() - (time.monotonic() - registered)
    return max(0.0, registered_wall - started_wall)


async def restart_after_crash(
    etcd: LocalEtcdCluster,
    workdir: Path,
    section: Section,
    *,
    trials: int,
    raft_trials: int,
    ttl: int = FLEET_TTL,
) -> list[Timed]:
    """kill -9 and restart at once, plain and across an etcd Raft leader change; a restart
    after SIGTERM as the floor."""
    scenario = _Restarts(etcd, workdir, ttl)

    async def body() -> None:
        await _converge(scenario.fleet, ttl)
        async with _checked(scenario.fleet, section, "restart"):
            for how, count in (("kill", trials), ("kill-raft", raft_trials), ("sigterm", trials)):
                for _ in range(count):
                    await scenario.trial(how)

    try:
        await _scenario(section, "restart", scenario.figures, body)
    finally:
        await scenario.fleet.close()
    scenario.explain()
    return scenario.figures


# --- the section ------------------------------------------------------------------------------


async def measure(etcd: LocalEtcdCluster, workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Every trouble figure; never raises for a slow or not yet fixed sidecar."""
    section = Section()
    trials = 2 if quick else 5

    def step(name: str) -> Path:
        print(f"[{time.strftime('%H:%M:%S')}]   trouble: {name}", flush=True)
        path = workdir / name
        path.mkdir()
        return path

    figures = await sigterm_blackholed(etcd, step("sigterm"), section, trials=trials)
    figures += await self_heal(etcd, step("heal"), section, trials=trials)
    figures += await restart_after_crash(
        etcd, step("restart"), section, trials=trials, raft_trials=1 if quick else 3
    )
    return {
        "ttl": FLEET_TTL,
        "figures": [f.as_json() for f in figures],
        "invariant_violations": section.violations,
        "errors": section.errors,
    }
