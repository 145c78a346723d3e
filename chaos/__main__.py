"""`make chaos` / `python -m chaos`: one seeded, randomized fault campaign, then its summary.

Exit codes: 0 when no check failed; 1 when a safety violation or a liveness miss was found;
3 when the testbed itself broke (etcd did not come back); 2 for bad arguments; 130 after
Ctrl-C and 143 after SIGTERM (everything stopped, no results written).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from chaos import report
from chaos.campaign import Campaign, Options
from chaos.plan import ALL_FAULTS, parse_faults

EXIT_FOUND = 1
EXIT_BROKEN = 3


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=__doc__,
        epilog=f"fault kinds: {', '.join(f.value for f in ALL_FAULTS)}",
    )
    parser.add_argument("--seed", type=int, help="replay a campaign ($CHAOS_SEED; else random)")
    parser.add_argument("--rounds", type=int, help="rounds of faults ($CHAOS_ROUNDS; 30)")
    parser.add_argument("--ttl", type=int, help="sidecars' lease TTL, s ($CHAOS_TTL; 5)")
    parser.add_argument(
        "--time-limit", type=float, default=540.0, help="wall-time bound, s (default 540)"
    )
    parser.add_argument("--out", type=Path, help="results JSON (bench/results/chaos-ttl<N>.json)")
    parser.add_argument("--doc", type=Path, default=report.DOC, help="report to refresh")
    parser.add_argument("--no-doc", action="store_true", help="leave the report alone")
    parser.add_argument("--faults", default="all", help="comma-separated fault kinds (default all)")
    parser.add_argument("--max-hold", type=float, help="longest hold of a round's faults, s")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite the report's section from bench/results/chaos-ttl*.json, run nothing",
    )
    args = parser.parse_args(argv)
    try:
        args.seed = args.seed if args.seed is not None else _env_int("CHAOS_SEED", -1)
        args.rounds = args.rounds if args.rounds is not None else _env_int("CHAOS_ROUNDS", 30)
        args.ttl = args.ttl if args.ttl is not None else _env_int("CHAOS_TTL", 5)
        args.kinds = parse_faults(args.faults)
    except ValueError as e:
        parser.error(str(e))
    if args.seed < 0:
        args.seed = secrets.randbelow(10**6)
    if args.ttl < 3:
        parser.error("--ttl must be at least 3 s (the validity margin is 2 s)")
    if args.rounds < 1 or args.time_limit <= 0:
        parser.error("--rounds and --time-limit must be positive")
    return args


async def _run(campaign: Campaign) -> dict[str, object]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await campaign.run()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render_only:
        report.render(report.RESULTS, args.doc)
        print(f"wrote {args.doc}")
        return 0
    options = Options(
        seed=args.seed,
        rounds=args.rounds,
        ttl=args.ttl,
        time_limit_s=args.time_limit,
        faults=args.kinds,
        max_hold_s=args.max_hold,
    )
    workdir = Path(tempfile.mkdtemp(prefix="ringside-chaos-"))
    campaign = Campaign(options, workdir)
    keep = True
    try:
        result = asyncio.run(_run(campaign))
    except KeyboardInterrupt:
        print(f"chaos: interrupted (seed {args.seed}); everything stopped, no results written")
        return 130
    except asyncio.CancelledError:
        print(f"chaos: terminated (seed {args.seed}); everything stopped, no results written")
        return 143
    finally:
        campaign.close()
        if not campaign.failed:
            keep = False
            shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or report.default_out(args.ttl)
    report.write(result, out, None if args.no_doc else args.doc)
    print(report.summary(result))
    print(f"wrote {out}" + ("" if args.no_doc else f" and {args.doc}"))
    if keep:
        print(f"sidecar logs kept in {workdir}")
    if campaign.broken is not None:
        return EXIT_BROKEN
    return EXIT_FOUND if campaign.failed else 0


if __name__ == "__main__":
    sys.exit(main())
