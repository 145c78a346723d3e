"""Each fault done to the testbed, and its heal; and the supervisor that notices a sidecar
exiting when the campaign did not ask it to.

Everything the campaign does to a node is told to the claim checks *before* it is done (no
await in between), so a claim is never judged against a half-recorded action. Sidecars and
etcd members are started from the event loop's thread only (their parent-death signal is
tied to the thread that forks); blocking waits on etcd run in worker threads so the pollers
keep polling.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chaos.claims import ClaimChecks
from chaos.findings import Findings
from chaos.plan import Fault, RoundPlan
from chaos.probe import Prober
from chaos.testbed import NODES, Testbed
from sidecar.testing.localcluster import EtcdMember, LocalClusterError
from tests.blackhole import Cut
from tests.fleet import Sidecar

SHUTDOWN_BUDGET_S = 2.0  # README: on SIGTERM, resign, revoke, exit 0 "well under 2 s"
SHUTDOWN_GIVE_UP_S = 10.0  # then kill -9, so the round can go on
RESUME_PROBE_TIMEOUT_S = 2.0
ETCD_HEAL_TIMEOUT_S = 30.0
RESPAWN_AFTER_S = 1.0  # a supervisor's restart delay for a sidecar that exited on its own

CUTS = {"both": Cut.BOTH, "answers": Cut.ANSWERS, "requests": Cut.REQUESTS}


class TestbedBroken(RuntimeError):
    """etcd did not come back: the campaign cannot go on (not a finding about ringside)."""


@dataclass(frozen=True)
class Target:
    node: str | None = None  # a sidecar
    members: tuple[int, ...] = ()  # etcd members, by index
    pause: tuple[bool, ...] = ()  # per member: SIGSTOP rather than kill -9


@dataclass
class Applied:
    fault: Fault
    target: str
    heal: Callable[[], Awaitable[None]]
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.fault.value}({self.target})"

    @property
    def skipped(self) -> bool:
        return any(note.startswith("skipped") for note in self.notes)


async def _nothing() -> None:
    return None


class Faults:
    def __init__(
        self, bed: Testbed, prober: Prober, checks: ClaimChecks, findings: Findings
    ) -> None:
        self.bed = bed
        self.prober = prober
        self.checks = checks
        self.findings = findings
        self.down: dict[str, str] = {}  # sidecars stopped on purpose, until restarted
        self.applied: Counter[str] = Counter()
        self.shutdowns: list[float] = []  # SIGTERM to exit, seconds

    def resolve(self, plan: RoundPlan, leader: str) -> list[Target]:
        """The nodes and members each fault of `plan` will hit, drawn from the round's seed."""
        rng = random.Random(plan.target_seed)
        followers = sorted(n for n in NODES if n != leader)
        taken: dict[str, set[str]] = defaultdict(set)
        size = len(self.bed.etcd.members)
        targets = []
        for planned in plan.faults:
            fault = planned.fault
            if fault is Fault.ETCD_QUORUM_LOSS:
                members = tuple(sorted(rng.sample(range(size), (size + 1) // 2)))
                pause = tuple(rng.random() < 0.5 for _ in members)
                targets.append(Target(members=members, pause=pause))
            elif fault in (Fault.ETCD_KILL_MEMBER, Fault.ETCD_PAUSE_MEMBER):
                targets.append(Target(members=(rng.randrange(size),)))
            elif fault.on_etcd:
                targets.append(Target())  # the Raft leader, found when the fault starts
            elif fault.on_leader:
                targets.append(Target(node=leader))
            else:
                kind = fault.resource
                free = [f for f in followers if f not in taken[kind]] or followers
                node = rng.choice(free)
                taken[kind].add(node)
                targets.append(Target(node=node))
        return targets

    async def apply(self, fault: Fault, target: Target) -> Applied:
        applied = await self._apply(fault, target)
        if not applied.skipped:
            self.applied[fault.value] += 1
        return applied

    async def _apply(self, fault: Fault, target: Target) -> Applied:
        if fault.on_etcd:
            return await self._etcd(fault, target)
        assert target.node is not None
        node, verb = target.node, fault.value.split("-")[0]
        sidecar = self.bed.sidecars[node]
        if verb == "cut":
            return self._cut(fault, node, CUTS[fault.value.split("-")[1]])
        if not sidecar.running or sidecar.paused:
            return Applied(fault, node, _nothing, [f"skipped: {node} is not running"])
        if verb == "kill":
            return await self._kill(fault, node, sidecar)
        if verb == "term":
            return self._terminate(fault, node, sidecar)
        if verb == "stop":
            return self._freeze(fault, node, sidecar)
        return await self._resign(fault, node, sidecar)

    # --- sidecar processes -----------------------------------------------------------------

    async def _kill(self, fault: Fault, node: str, sidecar: Sidecar) -> Applied:
        self.down[node] = "kill -9"
        self.checks.stopped(node, time.monotonic(), sigterm=False)
        sidecar.signal(signal.SIGKILL)
        assert sidecar.process is not None
        await _exited(sidecar.process, 5.0)
        return Applied(fault, node, lambda: self._restart(node))

    def _terminate(self, fault: Fault, node: str, sidecar: Sidecar) -> Applied:
        self.down[node] = "SIGTERM"
        assert sidecar.process is not None
        process, sent = sidecar.process, time.monotonic()
        self.checks.stopped(node, sent, sigterm=True)
        sidecar.signal(signal.SIGTERM)
        watch = asyncio.create_task(self._watch_shutdown(node, process, sent))

        async def heal() -> None:
            await watch
            self._restart_now(node)

        return Applied(fault, node, heal)

    async def _watch_shutdown(
        self, node: str, process: subprocess.Popen[bytes], sent: float
    ) -> None:
        code = await _exited(process, SHUTDOWN_GIVE_UP_S)
        took = time.monotonic() - sent
        if code is None:
            self.findings.liveness(
                "no-exit-after-sigterm",
                node,
                f"still running {SHUTDOWN_GIVE_UP_S:.0f} s after SIGTERM; killed with -9",
            )
            process.kill()
            await _exited(process, 5.0)
            return
        self.shutdowns.append(took)
        self.checks.exercised["SIGTERM exits timed"] += 1
        if code != 0:
            self.findings.violation(
                "sigterm-exit-code", node, f"exited with code {code} after SIGTERM (expected 0)"
            )
        if took > SHUTDOWN_BUDGET_S:
            self.findings.liveness(
                "slow-shutdown",
                node,
                f"took {took:.2f} s to exit after SIGTERM (budget {SHUTDOWN_BUDGET_S:.0f} s)",
            )

    def _freeze(self, fault: Fault, node: str, sidecar: Sidecar) -> Applied:
        sidecar.signal(signal.SIGSTOP)  # marks it paused: the pollers leave it alone
        stopped_at = time.monotonic()

        async def heal() -> None:
            assert sidecar.process is not None
            # Still marked paused while the campaign's own request is the first one it gets.
            sidecar.process.send_signal(signal.SIGCONT)
            resumed_at = time.monotonic()
            first = await self.prober.request(
                sidecar, "/v1/leader", timeout_s=RESUME_PROBE_TIMEOUT_S
            )
            sidecar.paused = False
            if first.status is None:
                self.findings.liveness(
                    "no-answer-after-sigcont",
                    node,
                    f"no answer to /v1/leader within {RESUME_PROBE_TIMEOUT_S:.0f} s of SIGCONT",
                )
            self.checks.first_after_resume(node, first, stopped_at, resumed_at)

        return Applied(fault, node, heal)

    async def _resign(self, fault: Fault, node: str, sidecar: Sidecar) -> Applied:
        ending = self.checks.resigning(node, time.monotonic())
        answer = await self.prober.request(
            sidecar, "/v1/leader/resign", method="POST", timeout_s=float(self.bed.ttl)
        )
        epoch = (answer.body or {}).get("epoch") if answer.status == 200 else None
        self.checks.resigned(ending, time.monotonic(), epoch if isinstance(epoch, int) else None)
        said = "no answer" if answer.status is None else f"{answer.status} {answer.body}"
        return Applied(fault, node, _nothing, [f"resign answered {said}"])

    def _restart_now(self, node: str) -> None:
        sidecar = self.bed.sidecars[node]
        if sidecar.running:
            return
        self.checks.restarted(node, time.monotonic())
        sidecar.start()
        self.down.pop(node, None)

    async def _restart(self, node: str) -> None:
        self._restart_now(node)

    # --- paths to etcd ---------------------------------------------------------------------

    def _cut(self, fault: Fault, node: str, how: Cut) -> Applied:
        route = self.bed.routes[node]
        label = f"{fault.value}({node})"
        if how in (Cut.BOTH, Cut.ANSWERS):  # it hears nothing from any quorum
            self.checks.blind([node], label, time.monotonic())
        route.cut(how)

        async def heal() -> None:
            self.checks.sighted([node], label)
            route.heal()

        return Applied(fault, node, heal)

    # --- etcd ------------------------------------------------------------------------------

    async def _etcd(self, fault: Fault, target: Target) -> Applied:
        etcd = self.bed.etcd
        if fault is Fault.ETCD_KILL_RAFT_LEADER:
            try:
                members = [await asyncio.to_thread(etcd.leader)]
            except LocalClusterError:
                return Applied(fault, "none", _nothing, ["skipped: no etcd Raft leader"])
            pause: tuple[bool, ...] = (False,)
        else:
            members = [etcd.members[i] for i in target.members]
            pause = target.pause or (fault is Fault.ETCD_PAUSE_MEMBER,)
        hurt = []
        for member, paused in zip(members, pause, strict=True):
            await asyncio.to_thread(member.pause if paused else member.kill)
            hurt.append(f"{member.name} {'paused' if paused else 'killed'}")
        label = f"{fault.value}({', '.join(hurt)})"
        if fault is Fault.ETCD_QUORUM_LOSS:
            self.checks.blind(list(NODES), label, time.monotonic())
        return Applied(fault, ", ".join(hurt), lambda: self._heal_etcd(members, label))

    async def _heal_etcd(self, members: list[EtcdMember], label: str) -> None:
        self.checks.sighted(list(NODES), label)
        for member in members:
            member.resume()
            member.start()  # from this thread: see the module doc
        await self._etcd_healthy(ETCD_HEAL_TIMEOUT_S)

    async def _etcd_healthy(self, within_s: float) -> None:
        """Every member answers healthy (`LocalEtcdCluster.wait_healthy`, but cancellable at
        once: a Ctrl-C during a heal must not wait for a thread to give up)."""
        deadline = time.monotonic() + within_s
        members = self.bed.etcd.members
        while True:
            sick = [m.name for m in members if not await asyncio.to_thread(m.health)]
            exited = [m.name for m in members if not m.running]
            if not sick:
                return
            if exited or time.monotonic() > deadline:
                raise TestbedBroken(
                    f"etcd did not heal within {within_s:.0f} s: unhealthy {sick}, exited {exited}"
                )
            await asyncio.sleep(0.05)

    # --- the supervisor --------------------------------------------------------------------

    async def supervise(self, interval_s: float = 0.1) -> None:
        """Report a sidecar that exits on its own, and restart it as systemd would."""
        while True:
            for name, sidecar in self.bed.sidecars.items():
                process = sidecar.process
                if process is None or process.poll() is None or name in self.down:
                    continue
                self.down[name] = "exited on its own"
                self.findings.violation(
                    "exited-on-its-own",
                    name,
                    f"exited with code {process.returncode} without a signal from the "
                    f"campaign; last log line: {_last_line(sidecar)!r}",
                )
                asyncio.get_running_loop().call_later(RESPAWN_AFTER_S, self._respawn, name)
            await asyncio.sleep(interval_s)

    def _respawn(self, name: str) -> None:
        if self.down.get(name) == "exited on its own":
            self._restart_now(name)


async def _exited(process: subprocess.Popen[bytes], within_s: float) -> int | None:
    """The exit code once `process` has exited, or None after `within_s`."""
    deadline = time.monotonic() + within_s
    while process.poll() is None:
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.01)
    return process.returncode


def _last_line(sidecar: Sidecar) -> str:
    try:
        with open(sidecar.log_path, "rb") as log:
            log.seek(0, 2)
            log.seek(max(0, log.tell() - 4096))
            lines = log.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
