"""The campaign: start the testbed, then for each planned round apply its faults, hold them,
heal them, and wait for the cluster to converge, while the pollers check every claim.

Liveness is judged after each heal only: all five sidecars must agree on the five members
and one eligible leader within 2 x TTL + 5 s of the heal starting (a quorum loss rightly
leaves no leader while it lasts). A round starts only if its planned hold, the heal and the
convergence bound fit in what is left of the time limit; the limit is also enforced as a
hard deadline, and everything is stopped on every way out (`Campaign.close`).
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from chaos.claims import ClaimChecks
from chaos.converge import Convergence, wait_converged
from chaos.faults import Faults, TestbedBroken
from chaos.findings import LIVENESS, VIOLATION, Findings
from chaos.plan import ALL_FAULTS, Fault, RoundPlan, make_plan
from chaos.pollers import poll_forever
from chaos.probe import Prober
from chaos.testbed import ELIGIBLE, NODES, Testbed
from sidecar.asyncio_compat import timeout_at
from sidecar.compat import UTC
from sidecar.testing.localcluster import LocalClusterError, LocalEtcdCluster

START_CONVERGENCE_S = 30.0
HEAL_ALLOWANCE_S = 5.0  # restarting etcd members and sidecars, in a round's time budget
RECOVERY_S = 60.0  # after a convergence miss, how long to wait before giving up
CLOSE_RESERVE_S = 10.0  # of the time limit, kept for stopping everything


@dataclass
class Options:
    seed: int
    rounds: int = 30
    ttl: int = 5
    time_limit_s: float = 540.0
    faults: tuple[Fault, ...] = ALL_FAULTS
    max_hold_s: float | None = None
    poll_interval_s: float = 0.05
    echo: bool = True  # print round lines and findings as they happen

    @property
    def convergence_bound_s(self) -> float:
        return 2.0 * self.ttl + 5.0


@dataclass
class RoundRecord:
    index: int
    faults: list[dict[str, Any]]
    hold_s: float
    convergence_s: float | None
    leader: str | None
    epoch: int | None
    findings: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Campaign:
    options: Options
    workdir: Path
    etcd: LocalEtcdCluster | None = None  # an existing cluster to use; else one of our own
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped: str | None = None  # why the campaign ended before its last round
    broken: str | None = None  # the testbed failed (not a finding about ringside)

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.findings = Findings(self.options.seed, self.started, echo=self.options.echo)
        self.bed = Testbed(self.workdir, self.options.ttl, self.etcd)
        self.prober = Prober(self.findings)
        self.checks = ClaimChecks(
            self.bed.fleet, self.findings, ttl=self.options.ttl, margin=self.bed.margin
        )
        self.faults = Faults(self.bed, self.prober, self.checks, self.findings)
        self.plan = make_plan(
            self.options.seed,
            self.options.rounds,
            ttl=self.options.ttl,
            kinds=self.options.faults,
            max_hold=self.options.max_hold_s,
        )
        self.leader: str | None = None
        self._background: list[asyncio.Task[None]] = []
        self.wall_time_s = 0.0
        self._unanswered_at_start = 0

    def say(self, line: str) -> None:
        if self.options.echo:
            print(line, flush=True)

    async def run(self) -> dict[str, Any]:
        """Run every round that fits in the time limit; the results (see `result`)."""
        background: list[asyncio.Task[None]] = []
        deadline = self.started + self.options.time_limit_s - CLOSE_RESERVE_S
        try:
            self.bed.start()
            background = [
                asyncio.create_task(
                    poll_forever(
                        self.bed.sidecars, self.prober, self.checks, self.options.poll_interval_s
                    )
                ),
                asyncio.create_task(self.faults.supervise()),
            ]
            self._background = background
            async with timeout_at(deadline):
                await self._start()
                for plan in self.plan:
                    needed = plan.hold_s + HEAL_ALLOWANCE_S + self.options.convergence_bound_s
                    if time.monotonic() + needed > deadline:
                        self.stopped = (
                            f"time limit: {self.options.time_limit_s:.0f} s leave no room for "
                            f"round {plan.index} (needs up to {needed:.0f} s)"
                        )
                        break
                    await self._round(plan)
                    self._checkers_alive()
        except asyncio.TimeoutError:
            self.stopped = f"time limit of {self.options.time_limit_s:.0f} s reached mid-round"
        except (TestbedBroken, LocalClusterError) as e:
            self.broken = str(e)
            self.say(f"campaign stopped: {e}")
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.prober.close()
            self.close()
        self.wall_time_s = round(time.monotonic() - self.started, 1)
        return self.result()

    def _checkers_alive(self) -> None:
        """A poller or the supervisor that died would leave the rest of the campaign clean
        for want of looking: stop it instead."""
        for task in self._background:
            if task.done():
                error = task.exception() if not task.cancelled() else None
                raise TestbedBroken(f"a checking task stopped: {error!r}")

    def close(self) -> None:
        """Stop every sidecar, proxy and (ours) etcd member; safe to call again."""
        self.bed.close()

    async def _start(self) -> None:
        self.findings.context(0, "start")
        self.say(
            f"chaos: seed {self.options.seed}, {len(self.plan)} rounds, TTL {self.options.ttl} s, "
            f"time limit {self.options.time_limit_s:.0f} s; 3 etcd members, sidecars "
            f"{', '.join(NODES)} (eligible: {', '.join(ELIGIBLE)}); logs in {self.workdir}"
        )
        result = await self._converge(time.monotonic(), START_CONVERGENCE_S)
        if not result.converged:
            raise TestbedBroken(f"the sidecars did not converge at start: {result.detail}")
        self._checkers_alive()
        self.leader = result.leader
        self._unanswered_at_start = self.prober.unanswered  # sidecars still starting up
        self.say(f"started: {result.detail} after {result.took_s:.1f} s")

    async def _round(self, plan: RoundPlan) -> None:
        assert self.leader is not None
        targets = self.faults.resolve(plan, self.leader)
        self.findings.context(plan.index, plan.describe())
        began = time.monotonic()
        applied = []
        for planned, target in zip(plan.faults, targets, strict=True):
            await asyncio.sleep(max(0.0, began + planned.delay_s - time.monotonic()))
            applied.append(await self.faults.apply(planned.fault, target))
            self.findings.context(plan.index, " + ".join(a.label for a in applied))
        await asyncio.sleep(max(0.0, began + plan.hold_s - time.monotonic()))
        healed_at = time.monotonic()
        for fault in reversed(applied):
            await fault.heal()
        result = await self._converge(healed_at, self.options.convergence_bound_s)
        if not result.converged:
            self.findings.liveness(
                "no-convergence",
                None,
                f"not converged {self.options.convergence_bound_s:.0f} s after the heal: "
                f"{result.detail}",
            )
            late = await self._converge(healed_at, RECOVERY_S)
            if not late.converged:
                raise TestbedBroken(
                    f"round {plan.index}: the cluster did not recover within {RECOVERY_S:.0f} s "
                    f"of the heal: {late.detail}"
                )
            self.leader = late.leader
        else:
            self.leader = result.leader
        found = self.findings.in_round(plan.index)
        self.rounds.append(
            RoundRecord(
                plan.index,
                [
                    {
                        "fault": a.fault.value,
                        "target": a.target,
                        "delay_s": p.delay_s,
                        "notes": a.notes,
                    }
                    for a, p in zip(applied, plan.faults, strict=True)
                ],
                plan.hold_s,
                round(result.took_s, 3) if result.converged else None,
                self.leader,
                result.epoch,
                len(found),
            )
        )
        notes = "".join(f"; {n}" for a in applied for n in a.notes)
        outcome = (
            f"converged in {result.took_s:.2f} s ({result.detail})"
            if result.converged
            else f"NOT converged in {self.options.convergence_bound_s:.0f} s"
        )
        flagged = f"; {len(found)} finding(s)" if found else ""
        self.say(
            f"round {plan.index:>2}/{len(self.plan)} t+{healed_at - self.started:6.1f}s "
            f"{' + '.join(a.label for a in applied)} held {plan.hold_s:.1f} s -> "
            f"{outcome}{notes}{flagged}"
        )

    async def _converge(self, since: float, within_s: float) -> Convergence:
        return await wait_converged(
            self.prober,
            self.bed.sidecars,
            expected=NODES,
            eligible=ELIGIBLE,
            since=since,
            within_s=within_s,
        )

    def replay(self) -> str:
        """The command that replays this campaign's plan."""
        o = self.options
        extra = "" if o.faults == ALL_FAULTS else f" --faults {','.join(f.value for f in o.faults)}"
        extra += "" if o.max_hold_s is None else f" --max-hold {o.max_hold_s:g}"
        return (
            f"python -m chaos --seed {o.seed} --rounds {o.rounds} --ttl {o.ttl} "
            f"--time-limit {o.time_limit_s:g}{extra}"
        )

    def result(self) -> dict[str, Any]:
        times = [r.convergence_s for r in self.rounds if r.convergence_s is not None]
        violations = self.findings.of_kind(VIOLATION)
        misses = self.findings.of_kind(LIVENESS)
        return {
            "seed": self.options.seed,
            "ttl": self.options.ttl,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "rounds_planned": len(self.plan),
            "rounds_done": len(self.rounds),
            "time_limit_s": self.options.time_limit_s,
            "wall_time_s": self.wall_time_s,
            "stopped": self.stopped,
            "broken": self.broken,
            "replay": self.replay(),
            "fault_kinds": [f.value for f in self.options.faults],
            "faults_by_kind": dict(sorted(self.faults.applied.items())),
            "faults": sum(self.faults.applied.values()),
            "violations": len(violations),
            "liveness_misses": len(misses),
            "convergence_bound_s": self.options.convergence_bound_s,
            "convergence_worst_s": max(times, default=None),
            "convergence_median_s": round(statistics.median(times), 3) if times else None,
            "shutdown_worst_s": round(max(self.faults.shutdowns), 3)
            if self.faults.shutdowns
            else None,
            "requests": self.prober.requests,
            "unanswered": self.prober.unanswered - self._unanswered_at_start,
            "claims": self.checks.claims,
            "checks_exercised": dict(sorted(self.checks.exercised.items())),
            "findings": [f.as_json() for f in self.findings.items],
            "rounds": [r.as_json() for r in self.rounds],
        }

    @property
    def failed(self) -> bool:
        return bool(self.findings.items) or self.broken is not None
