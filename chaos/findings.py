"""What the campaign found: every check failure with the round, seed, faults and time.

A check that keeps failing (a split brain seen on every poll) is one finding with a count of
repeats, not hundreds of lines: findings are keyed by check, round, node and a detail key.
Times are seconds on the monotonic clock since the campaign started (`t+12.345 s`).

>>> findings = Findings(seed=42, started=100.0, echo=False)
>>> findings.context(3, "kill-leader(hetzner-cpu1)")
>>> findings.violation("claim-after-sigterm", "hetzner-cpu1", "claimed epoch 9", now=104.5)
>>> findings.violation("claim-after-sigterm", "hetzner-cpu1", "claimed epoch 9", now=104.6)
>>> [(f.round, f.at_s, f.repeats) for f in findings.items]
[(3, 4.5, 2)]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

VIOLATION = "violation"  # a safety rule or a promise of the sidecar was broken
LIVENESS = "liveness"  # something did not happen in time (convergence, shutdown)


@dataclass
class Finding:
    check: str
    kind: str  # VIOLATION or LIVENESS
    round: int
    seed: int
    faults: str
    at_s: float
    node: str | None
    detail: str
    repeats: int = 1
    last_at_s: float = 0.0

    def line(self) -> str:
        again = f" (x{self.repeats}, last t+{self.last_at_s:.3f} s)" if self.repeats > 1 else ""
        where = f"round {self.round}, seed {self.seed}, t+{self.at_s:.3f} s, {self.faults}"
        return f"{self.kind.upper()} {self.check} [{where}] {self.detail}{again}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Findings:
    seed: int
    started: float
    echo: bool = True  # print each new finding as it happens
    items: list[Finding] = field(default_factory=list)
    _round: int = 0
    _faults: str = "setup"
    _keys: dict[tuple[str, int, str | None, str], Finding] = field(default_factory=dict)

    def context(self, round_index: int, faults: str) -> None:
        """The round and faults that findings from now on belong to."""
        self._round, self._faults = round_index, faults

    def since_start(self, moment: float) -> float:
        return round(moment - self.started, 3)

    def violation(
        self, check: str, node: str | None, detail: str, *, key: str = "", now: float | None = None
    ) -> None:
        self._record(VIOLATION, check, node, detail, key=key, now=now)

    def liveness(
        self, check: str, node: str | None, detail: str, *, key: str = "", now: float | None = None
    ) -> None:
        self._record(LIVENESS, check, node, detail, key=key, now=now)

    def _record(
        self, kind: str, check: str, node: str | None, detail: str, *, key: str, now: float | None
    ) -> None:
        at = self.since_start(time.monotonic() if now is None else now)
        found = self._keys.get((check, self._round, node, key or detail))
        if found is not None:
            found.repeats += 1
            found.last_at_s = at
            return
        finding = Finding(check, kind, self._round, self.seed, self._faults, at, node, detail)
        finding.last_at_s = at
        self._keys[(check, self._round, node, key or detail)] = finding
        self.items.append(finding)
        if self.echo:
            print(f"    ! {finding.line()}", flush=True)

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.items if f.kind == kind]

    def in_round(self, round_index: int) -> list[Finding]:
        return [f for f in self.items if f.round == round_index]
