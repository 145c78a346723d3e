"""`make bench` / `python -m bench`: every figure, side by side with etcd's floor, in one run.

Starts a real three-member etcd on loopback (fresh for the run), measures etcd's own floors,
then the scenarios, and writes `bench/results/latest.json` and `docs/benchmarks.md`.
Benchmarks report; they never fail on a slow machine (only on a broken one).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import node, sidecars
from bench.floors import measure_floors
from bench.netem import bad_network
from bench.report import render_markdown
from bench.scale import ScaleRun
from bench.stats import Figure
from sidecar.localcluster import LocalEtcdCluster, find_etcd

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


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    quick = args.quick
    results: dict[str, Any] = {"machine": _machine(), "quick": quick, "sections": {}}
    sections = results["sections"]

    def step(name: str) -> Path:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
        path = workdir / name.replace(" ", "-")
        path.mkdir()
        return path

    with LocalEtcdCluster(workdir / "etcd") as etcd:
        step("floors")
        floors = await measure_floors(etcd, samples=50 if quick else 300)
        sections["floors"] = floors
        revoke, put_watch = floors["revoke_delete"].median / 1000, floors["put_watch"].median / 1000

        detection = []
        for ttl, trials in ((5, 2 if quick else 6), (10, 1 if quick else 4)):
            detection.append(
                await sidecars.crash_detection(etcd, step(f"detect {ttl}"), ttl, trials)
            )
        sections["crash_detection"] = detection

        failover = []
        for ttl, trials in ((5, 3 if quick else 10), (10, 2 if quick else 5)):
            failover.append(
                await sidecars.leader_change(etcd, step(f"failover {ttl}"), ttl, trials, "kill")
            )
        sections["crash_failover"] = failover
        sections["failover_during_etcd_election"] = [
            await sidecars.leader_change(
                etcd, step("failover etcd leader"), 5, 2 if quick else 5, "kill-with-etcd-leader"
            )
        ]

        handovers: list[Figure] = []
        for how in ("sigterm", "resign"):
            figure = await sidecars.leader_change(etcd, step(how), 5, 3 if quick else 10, how)
            figure.against, figure.reference = "etcd revoke -> delete floor", revoke
            handovers.append(figure)
        sections["graceful_handover"] = handovers

        leave, join = await sidecars.convergence(etcd, step("convergence"), 3 if quick else 10)
        for figure in (leave, join):
            figure.against, figure.reference = "etcd put -> watch floor", put_watch
        sections["convergence"] = [leave, join]

        scale = []
        for n in (200,) if quick else (200, 1000):
            step(f"scale {n}")
            scale.append(await ScaleRun(etcd, n, ttl=10).run(10 if quick else 20))
        sections["scale"] = scale

        sections["local_api"] = await node.local_api(etcd, step("api"), 3 if quick else 10)
        sections["footprint"] = await node.footprint(etcd, step("footprint"), 10 if quick else 60)
        minutes = (
            args.bad_network_minutes
            if args.bad_network_minutes is not None
            else (1 if quick else 10)
        )
        sections["bad_network"] = await bad_network(etcd, step("bad network"), minutes)
    return results


def _jsonable(value: Any) -> Any:
    if isinstance(value, Figure):
        return value.as_json()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few trials: check the harness")
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
        args.doc.write_text(render_markdown(json.loads(args.out.read_text())))
        return 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ringside-bench-") as tmp:
        results = _jsonable(asyncio.run(run(args, Path(tmp))))
    results["wall_time_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.doc.write_text(render_markdown(results))
    print(f"wrote {args.out} and {args.doc} in {results['wall_time_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
