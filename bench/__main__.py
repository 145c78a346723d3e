"""`make bench` / `python -m bench`: every figure, side by side with etcd's floor, in one run.

Starts a real three-member etcd on loopback (fresh for the run), measures etcd's own floors,
then the scenarios, and writes `bench/results/latest.json` and `docs/benchmarks.md`.
Benchmarks report; they never fail on a slow machine (only on a broken one).

`--only trouble` (or any comma-separated sections, see `SECTIONS`) measures just those, on a
fresh etcd too, and merges them into the existing `--out` results before rendering again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from bench import health, node, seat, security, sidecars, trouble
from bench.floors import measure_floors
from bench.netem import bad_network
from bench.report import render_markdown
from bench.scale import ScaleRun
from bench.stats import Figure
from sidecar.compat import UTC
from sidecar.testing.localcluster import LocalEtcdCluster, find_etcd

ROOT = Path(__file__).resolve().parents[1]


def _machine() -> dict[str, Any]:
    command = [find_etcd(), "--version"]
    version = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "etcd": version.splitlines()[0].removeprefix("etcd Version: ") if version else "unknown",
    }


# Sections in the order a full run measures them; `--only` picks some (floors first when
# asked, as the handover and convergence figures are compared with them).
SECTIONS = (
    "floors", "detection", "failover", "handover", "convergence", "scale", "api", "footprint",
    "bad_network", "trouble", "security", "orchestrator", "switchover", "seat",
)  # fmt: skip


class Bench:
    """One run's sections against one etcd cluster; each method measures one section."""

    def __init__(self, args: argparse.Namespace, etcd: LocalEtcdCluster, workdir: Path) -> None:
        self.quick: bool = args.quick
        self.args = args
        self.etcd = etcd
        self.workdir = workdir
        self.sections: dict[str, Any] = {}

    def step(self, name: str) -> Path:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        path = self.workdir / name.replace(" ", "-")
        path.mkdir()
        return path

    def _floor(self, name: str) -> float | None:
        """A floor of this run in seconds (None when floors were not measured)."""
        floors = self.sections.get("floors")
        return floors[name].median / 1000 if floors else None

    async def floors(self) -> None:
        self.step("floors")
        self.sections["floors"] = await measure_floors(self.etcd, samples=50 if self.quick else 300)

    async def detection(self) -> None:
        detection = []
        for ttl, trials in ((5, 2 if self.quick else 6), (10, 1 if self.quick else 4)):
            path = self.step(f"detect {ttl}")
            detection.append(await sidecars.crash_detection(self.etcd, path, ttl, trials))
        self.sections["crash_detection"] = detection

    async def failover(self) -> None:
        failover = []
        for ttl, trials in ((5, 3 if self.quick else 10), (10, 2 if self.quick else 5)):
            path = self.step(f"failover {ttl}")
            failover.append(await sidecars.leader_change(self.etcd, path, ttl, trials, "kill"))
        self.sections["crash_failover"] = failover
        self.sections["failover_during_etcd_election"] = [
            await sidecars.leader_change(
                self.etcd, self.step("failover etcd leader"), 5, 2 if self.quick else 5,
                "kill-with-etcd-leader",
            )
        ]  # fmt: skip

    async def handover(self) -> None:
        handovers: list[Figure] = []
        revoke = self._floor("revoke_delete")
        for how in ("sigterm", "resign"):
            trials = 3 if self.quick else 10
            figure = await sidecars.leader_change(self.etcd, self.step(how), 5, trials, how)
            if revoke is not None:
                figure.against, figure.reference = "etcd revoke -> delete floor", revoke
            handovers.append(figure)
        self.sections["graceful_handover"] = handovers

    async def convergence(self) -> None:
        trials = 3 if self.quick else 10
        leave, join = await sidecars.convergence(self.etcd, self.step("convergence"), trials)
        put_watch = self._floor("put_watch")
        for figure in (leave, join):
            if put_watch is not None:
                figure.against, figure.reference = "etcd put -> watch floor", put_watch
        self.sections["convergence"] = [leave, join]

    async def scale(self) -> None:
        scale = []
        for n in (200,) if self.quick else (200, 1000):
            self.step(f"scale {n}")
            scale.append(await ScaleRun(self.etcd, n, ttl=10).run(10 if self.quick else 20))
        self.sections["scale"] = scale

    async def api(self) -> None:
        trials = 3 if self.quick else 10
        self.sections["local_api"] = await node.local_api(self.etcd, self.step("api"), trials)

    async def footprint(self) -> None:
        idle = 10 if self.quick else 60
        self.sections["footprint"] = await node.footprint(self.etcd, self.step("footprint"), idle)

    async def bad_network(self) -> None:
        minutes = self.args.bad_network_minutes
        if minutes is None:
            minutes = 1 if self.quick else 10
        path = self.step("bad network")
        self.sections["bad_network"] = await bad_network(self.etcd, path, minutes)

    async def trouble(self) -> None:
        path = self.step("trouble")
        self.sections["trouble"] = await trouble.measure(self.etcd, path, quick=self.quick)

    async def orchestrator(self) -> None:
        trials = 2 if self.quick else 5
        path = self.step("orchestrator failover")
        figure = await health.orchestrator_failover(self.etcd, path, trials)
        self.sections["orchestrator_failover"] = [figure]

    async def switchover(self) -> None:
        path = self.step("switchover")
        moved = await health.switchover(self.etcd, path, 5 if self.quick else 20)
        self.sections["switchover"] = [moved]

    async def seat(self) -> None:
        """Issue 21: crash-and-restart failover, and leader changes per etcd member fault."""
        trials = 2 if self.quick else 5
        restart = await seat.crash_restart(self.etcd, self.step("crash restart"), trials)
        self.sections["crash_restart"] = restart
        faults = await seat.member_faults(self.etcd, self.step("member faults"), trials)
        self.sections["etcd_member_fault"] = faults

    async def security(self) -> None:
        """TLS + auth against plain, on two clusters of its own (not `self.etcd`)."""
        path = self.step("security")
        self.sections["security"] = await security.measure(path, self.step, quick=self.quick)


async def run(args: argparse.Namespace, workdir: Path, only: list[str]) -> dict[str, Any]:
    """Measure the sections in `only` (in `SECTIONS` order) on a fresh etcd cluster."""
    results: dict[str, Any] = {"machine": _machine(), "quick": args.quick}
    with LocalEtcdCluster(workdir / "etcd") as etcd:
        bench = Bench(args, etcd, workdir)
        for name in SECTIONS:
            if name in only:
                await getattr(bench, name)()
    results["sections"] = bench.sections
    return results


def _jsonable(value: Any) -> Any:
    if isinstance(value, Figure):
        return value.as_json()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _sections(text: str) -> list[str]:
    names = [name.strip().replace("-", "_") for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or text!r}; choose from {', '.join(SECTIONS)}"
        )
    return names


def _merge(out: Path, partial: dict[str, Any], wall_time_s: float) -> dict[str, Any]:
    """A run of some sections only, merged into the results of the last full run at `out`
    (when there is one): those sections replaced, the rest kept, the re-measure noted."""
    try:
        results: dict[str, Any] = json.loads(out.read_text())
        assert isinstance(results.get("sections"), dict)
    except (OSError, ValueError, AssertionError):
        return {**partial, "wall_time_s": wall_time_s, "partial": True}
    results["sections"].update(partial["sections"])
    results.setdefault("remeasured", []).append(
        {
            "date": partial["machine"]["date"],
            "sections": sorted(partial["sections"]),
            "quick": partial["quick"],
            "wall_time_s": wall_time_s,
        }
    )
    return results


def _write_doc(doc: Path, results: dict[str, Any]) -> None:
    """Render `results` into `doc`, keeping what the report it replaces keeps (the chaos
    section)."""
    previous = doc.read_text() if doc.exists() else ""
    doc.write_text(render_markdown(results, previous))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few trials: check the harness")
    parser.add_argument(
        "--only",
        type=_sections,
        action="extend",
        metavar="SECTION[,SECTION]",
        help=f"measure these sections only ({', '.join(SECTIONS)}) and merge them into --out",
    )
    parser.add_argument(
        "--bad-network-minutes", type=float, help="length of the bad-network run (default 10)"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the Markdown from --out, measure nothing",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs/benchmarks.md")
    args = parser.parse_args()
    if args.render_only:
        _write_doc(args.doc, json.loads(args.out.read_text()))
        return 0
    only = args.only or list(SECTIONS)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ringside-bench-") as tmp:
        results = _jsonable(asyncio.run(run(args, Path(tmp), only)))
    wall_time_s = round(time.monotonic() - started, 1)
    if args.only:
        results = _merge(args.out, results, wall_time_s)
    else:
        results["wall_time_s"] = wall_time_s
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _write_doc(args.doc, results)
    print(f"wrote {args.out} and {args.doc} in {wall_time_s} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
