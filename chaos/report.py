"""A campaign's results: the JSON file, the printed summary, and the section of
`docs/benchmarks.md` between the chaos markers (kept there by `make bench`), which lists the
last campaign of each TTL found beside the JSON file (`chaos-ttl<N>.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.report import CHAOS_BEGIN, CHAOS_END

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
FINDINGS_LISTED = 12  # per campaign in the doc; the JSON has them all

INTRO = (
    "`make chaos` (`chaos/`): a seeded, randomized campaign on a real 3-member etcd and five "
    "sidecars (three leader-eligible), each reaching etcd through a partition proxy of its own. "
    "Each round holds one or two faults for a random time, then heals them: kill -9, SIGTERM "
    "and SIGSTOP of the leader or a follower (restarted or resumed at the heal), a resign, an "
    "etcd member killed or paused, the etcd Raft leader killed, two of three members stopped "
    "(quorum loss), and one sidecar's path to etcd cut both ways or one way. Meanwhile every "
    "sidecar is polled every 50 ms: no overlapping validity of two leaders, no lower epoch "
    "after a higher one, one node per epoch, no claim after SIGTERM or on a frozen leader's "
    "first answer, no leader named from a view older than the validity budget, no 5xx, no "
    "sidecar exiting on its own, exit 0 within 2 s of SIGTERM; after each heal all sidecars "
    "must agree on the members and one leader within 2 x TTL + 5 s. The last campaign per TTL "
    "(`bench/results/chaos-ttl<N>.json`); replay one with "
    "`make chaos CHAOS_SEED=<seed> CHAOS_TTL=<ttl> CHAOS_ROUNDS=<rounds>`."
)


def default_out(ttl: int) -> Path:
    return RESULTS / f"chaos-ttl{ttl}.json"


def write(result: dict[str, Any], out: Path, doc: Path | None) -> None:
    """Write `result` to `out`, then (with `doc`) refresh the doc's chaos section."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if doc is not None:
        render(out.parent, doc, result)


def render(results_dir: Path, doc: Path, latest: dict[str, Any] | None = None) -> None:
    """Rewrite the doc's chaos section from every `chaos-ttl*.json` in `results_dir` (and
    `latest`, the campaign just run, which wins for its TTL)."""
    by_ttl = {r["ttl"]: r for r in _load(sorted(results_dir.glob("chaos-ttl*.json")))}
    if latest is not None:
        by_ttl[latest["ttl"]] = latest
    text = doc.read_text() if doc.exists() else ""
    doc.write_text(splice(text, render_section(by_ttl[t] for t in sorted(by_ttl))))


def _load(paths: Iterable[Path]) -> list[dict[str, Any]]:
    found = []
    for path in paths:
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(loaded, dict) and "ttl" in loaded and "seed" in loaded:
            found.append(loaded)
    return found


def splice(text: str, section: str) -> str:
    """`text` with what lies between the chaos markers replaced by `section`; the markers
    are added at the end when missing.

    >>> splice("# report\\n", "new")
    '# report\\n\\n<!-- chaos:begin -->\\nnew\\n<!-- chaos:end -->\\n'
    >>> splice(splice("# report\\n", "old") + "tail\\n", "new")
    '# report\\n\\n<!-- chaos:begin -->\\nnew\\n<!-- chaos:end -->\\ntail\\n'
    """
    block = f"{CHAOS_BEGIN}\n{section.strip()}\n{CHAOS_END}"
    begin = text.find(CHAOS_BEGIN)
    end = text.find(CHAOS_END, begin) if begin >= 0 else -1
    if end < 0:
        return f"{text.rstrip()}\n\n{block}\n" if text.strip() else f"{block}\n"
    return text[:begin] + block + text[end + len(CHAOS_END) :]


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def render_section(results: Iterable[dict[str, Any]]) -> str:
    rows = list(results)
    out = [
        "## Chaos campaigns",
        "",
        INTRO,
        "",
        "| TTL | date | seed | rounds | faults | violations | liveness misses "
        "| convergence worst / median | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['ttl']} s | {r['date']} | {r['seed']} "
            f"| {r['rounds_done']}/{r['rounds_planned']} "
            f"| {r['faults']} | {r['violations']} | {r['liveness_misses']} "
            f"| {_s(r['convergence_worst_s'])} / {_s(r['convergence_median_s'])} "
            f"| {r['wall_time_s']:.0f} s |"
        )
    for r in rows:
        kinds = ", ".join(f"{k} {n}" for k, n in r["faults_by_kind"].items())
        out += ["", f"TTL {r['ttl']} s, seed {r['seed']}: faults {kinds or 'none'}."]
        exercised = ", ".join(f"{k} {n}" for k, n in r.get("checks_exercised", {}).items())
        if exercised:
            out.append(f"Checks exercised: {exercised}.")
        if r.get("stopped"):
            out.append(f"Stopped early: {r['stopped']}.")
        if r.get("broken"):
            out.append(f"Testbed broken: {r['broken']}.")
        findings = r["findings"]
        if findings:
            out += [
                "",
                "| check | kind | round | faults | t | node | what |",
                "|---|---|---|---|---|---|---|",
            ]
            for f in findings[:FINDINGS_LISTED]:
                again = f" (x{f['repeats']})" if f["repeats"] > 1 else ""
                what = str(f["detail"]).replace("|", "/")
                out.append(
                    f"| {f['check']} | {f['kind']} | {f['round']} | {f['faults']} "
                    f"| {f['at_s']:.1f} s | {f['node'] or '-'} | {what}{again} |"
                )
            if len(findings) > FINDINGS_LISTED:
                out.append(f"\n... and {len(findings) - FINDINGS_LISTED} more in the JSON file.")
    return "\n".join(out)


def summary(result: dict[str, Any]) -> str:
    """The final summary printed at the end of a campaign."""
    kinds = ", ".join(f"{k} {n}" for k, n in result["faults_by_kind"].items())
    lines = [
        f"chaos summary: seed {result['seed']}, TTL {result['ttl']} s, rounds "
        f"{result['rounds_done']}/{result['rounds_planned']}, wall time {result['wall_time_s']} s",
        f"  faults: {result['faults']} ({kinds or 'none'})",
        f"  violations: {result['violations']}, liveness misses: {result['liveness_misses']}",
        f"  convergence after heal: worst {_s(result['convergence_worst_s'])}, median "
        f"{_s(result['convergence_median_s'])} (bound {result['convergence_bound_s']:.0f} s); "
        f"slowest SIGTERM exit {_s(result['shutdown_worst_s'])}",
        f"  polls: {result['requests']} requests, {result['unanswered']} unanswered after "
        "start-up (sidecars restarting or stopping), "
        f"{result['claims']} leadership claims checked",
    ]
    exercised = ", ".join(f"{k} {n}" for k, n in result["checks_exercised"].items())
    lines.append(f"  checks exercised: {exercised or 'none'}")
    if result["stopped"]:
        lines.append(f"  stopped early: {result['stopped']}")
    if result["broken"]:
        lines.append(f"  testbed broken: {result['broken']}")
    for f in result["findings"]:
        again = f" (x{f['repeats']})" if f["repeats"] > 1 else ""
        lines.append(
            f"  - {f['kind']} {f['check']} [round {f['round']}, seed {f['seed']}, "
            f"t+{f['at_s']:.3f} s, {f['faults']}] {f['node'] or ''}: {f['detail']}{again}"
        )
    lines.append(f"  replay: {result['replay']}")
    return "\n".join(lines)
