"""`docs/benchmarks.md` from one run's results: every figure, its floor, and what fell short."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import report_security

NOTES = Path(__file__).with_name("notes.md")  # hand-kept commentary, appended to the report
DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
# `make chaos` writes its own section between these markers; a new report keeps it as it is.
CHAOS_BEGIN, CHAOS_END = "<!-- chaos:begin -->", "<!-- chaos:end -->"

EXPLAIN = {
    "floors": "etcd alone, same run, same machine: a put, a put seen by a watcher on another "
    "member, and a lease revoke seen there as a delete. Nothing ringside does can be faster.",
    "crash_detection": "kill -9 a follower sidecar; time until every other sidecar's "
    "`/v1/members` has dropped it. Bounded below by the lease TTL.",
    "crash_failover": "kill -9 the leader; time until every remaining sidecar's `/v1/leader` "
    "names the same new leader with a higher epoch.",
    "failover_during_etcd_election": "kill -9 the leader sidecar and the etcd Raft leader "
    "member at the same moment; time until every remaining sidecar names the same new leader. "
    "etcd's new leader renews every lease to its full TTL, so the design expects up to "
    "2 x TTL + 2.5 s.",
    "orchestrator_failover": "Three eligible sidecars at the default health check (every 5 s, "
    "down after 3 failures): the leader's orchestrator starts answering 503; time until every "
    "sidecar names another leader (decision 0015). Target 16 s, against Patroni's 30 s loop.",
    "switchover": "Three eligible sidecars: `POST /v1/leader/switchover?to=<youngest "
    "candidate>` on the third node; time until every sidecar's `/v1/leader` names the target "
    "at a higher epoch (the candidate in between queues again first; decision 0016). Target "
    "50 ms on loopback, `etcdctl move-leader`-class.",
    "graceful_handover": "SIGTERM the leader, or `POST /v1/leader/resign`; time until every "
    "sidecar reports the new leader. Compared with etcd's revoke -> delete floor.",
    "convergence": "five sidecars; one leaves (SIGTERM) or joins; time until all views agree. "
    "A join is timed from the member key appearing in etcd.",
    "scale": "N simulated members in one process, each with its own lease, keepalives every "
    "TTL/3 and its own watch: where does etcd or the client saturate?",
    "local_api": "`wrk` (2 threads, 16 connections) against one sidecar with 20 members in view.",
    "bad_network": "a sidecar whose path to etcd has 200 ms +- 100 ms delay and 5 % loss "
    "(tc netem in a network namespace, or a userspace delay proxy where the kernel has no netem) "
    "for 10 minutes at the default TTL: lease losses and "
    "leader changes (target: zero).",
    "footprint": "one idle sidecar: memory, CPU, the etcd requests it causes, and how long "
    "`ringside status` takes as a command.",
    "trouble": "how fast a sidecar gets out of trouble (`bench/trouble.py`), each figure against "
    "its target. SIGTERM while its route to every etcd endpoint is cut both ways (a userspace "
    "blackhole: bytes vanish, nothing is refused), from the signal to the process exit. A "
    "member or candidate key deleted by an outside client, until the sidecar has written it "
    "again (seen by a watch of the bench's own). kill -9 then an immediate restart with the same "
    "node id and lock file, until the new process's record is in its member key; once plain, "
    "once with the etcd Raft leader killed between crash and restart, and after a clean SIGTERM "
    "as the floor. A trial that runs out of time counts in the median and the worst as more "
    "than its limit.",
}
EXPLAIN["crash_restart"] = (
    "kill -9 the leader's sidecar and start it again at once, as a supervisor does; time until "
    "another sidecar claims the leadership, and how many trials had a successor lead inside the "
    "validity the killed process had just promised (target 0; decision 0025)."
)
EXPLAIN["etcd_member_fault"] = (
    "five sidecars at TTL 5 s; one etcd member killed or paused for 3 s, the Raft leader or "
    "another, then healed; ringside leader changes seen per trial (target 0: a majority stays "
    "up). Keepalives and proofs of life go to two members at once and retry every 0.25 s."
)
ANCHORS = (
    "Defaults of the systems ringside is compared with: Kubernetes leader election fails over "
    "in about 15-17 s, Patroni in 20-30 s, Consul locks in 21-53 s, etcd's own election "
    "helper in 40-60 s (60 s session TTL); the gossip orchestrator ringside replaces declared "
    "peers dead after 90-630 s."
)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _figures(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| figure | trials | median | p99 | compared with | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for f in rows:
        against = f"{f['against']} ({_num(f['reference'])} {f['unit']})" if f["against"] else "-"
        lines.append(
            f"| {f['name']} | {f['trials']} | {_num(f['median'])} {f['unit']} "
            f"| {_num(f['p99'])} {f['unit']} | {against} | {_num(f['ratio'], 2)} |"
        )
    return lines


def _seconds(value: float | None, figure: dict[str, Any]) -> str:
    """A median or worst of a trouble figure: None when trials ran out means "> limit"."""
    if value is not None:
        return f"{value:.3f} s"
    return f"> {figure['limit_s']:g} s" if figure["trials"] else "-"


def _trouble(section: dict[str, Any]) -> list[str]:
    lines = [
        "| figure | trials | median | worst | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in section["figures"]:
        met = {True: "yes", False: "**no**", None: "-"}[f["met"]]
        trials = str(f["trials"])
        if f["timeouts"]:
            trials += f" ({f['timeouts']} {f['miss']} {f['limit_s']:g} s)"
        lines.append(
            f"| {f['name']} | {trials} | {_seconds(f['median'], f)} "
            f"| {_seconds(f['worst'], f)} | {f['target']} | {met} |"
        )
    notes = [f"- {f['name']}: {f['note']}" for f in section["figures"] if f["note"]]
    if notes:
        lines += ["", *notes]
    if section["invariant_violations"]:
        lines += ["", "Invariant violations seen by the checker meanwhile:", ""]
        lines += [f"- {v}" for v in section["invariant_violations"]]
    if section["errors"]:
        lines += ["", "Scenarios that could not finish:", ""]
        lines += [f"- {e}" for e in section["errors"]]
    return lines


def _trouble_shortfalls(section: dict[str, Any]) -> list[str]:
    found = []
    for f in section["figures"]:
        if f["met"] is False:
            worst = _seconds(f["worst"], f)
            missed = f", {f['timeouts']} {f['miss']} {f['limit_s']:g} s" * bool(f["timeouts"])
            found.append(f"- {f['name']}: worst {worst}{missed}; target {f['target']}.")
    found += [f"- invariant violated: {v}" for v in section["invariant_violations"]]
    found += [f"- {e}" for e in section["errors"]]
    return found


def _shortfalls(sections: dict[str, Any]) -> list[str]:
    """Where the run missed the design's expected results, said plainly."""
    found = []
    for f in sections.get("crash_detection", []) + sections.get("crash_failover", []):
        ttl = f["reference"]
        if f["p99"] is not None and f["p99"] > ttl + 1:
            found.append(
                f"- {f['name']}: p99 {f['p99']:.2f} s is above the expected TTL + 1 s "
                f"({ttl + 1} s)."
            )
    for f in sections.get("failover_during_etcd_election", []):
        if f["p99"] is not None and f["p99"] > f["reference"]:
            found.append(
                f"- {f['name']}: p99 {f['p99']:.2f} s is above the design's worst case "
                f"({f['reference']} s)."
            )
    for f in sections.get("orchestrator_failover", []):
        if f["p99"] is not None and f["p99"] > f["reference"]:
            found.append(f"- {f['name']}: p99 {f['p99']:.2f} s; target {f['reference']:g} s.")
    for f in sections.get("switchover", []):
        if f["median"] is not None and f["median"] > f["reference"]:
            found.append(
                f"- {f['name']}: median {f['median'] * 1000:.0f} ms; target "
                f"{f['reference'] * 1000:.0f} ms."
            )
    for f in sections.get("graceful_handover", []):
        if f["median"] is not None and f["median"] > 0.1:
            found.append(f"- {f['name']}: median {f['median'] * 1000:.0f} ms is above 100 ms.")
    for run in sections.get("scale", []):
        needed, achieved = run["keepalives_needed_per_s"], run["keepalives_achieved_per_s"]
        if achieved < 0.95 * needed or run["keepalive_failures"]:
            found.append(
                f"- {run['sessions']} sessions: {achieved}/s keepalives achieved of {needed}/s "
                f"needed, {run['keepalive_failures']} failed."
            )
    bad = sections.get("bad_network", {})
    if bad.get("lease_losses") or bad.get("leader_changes"):
        found.append(
            f"- bad network: {bad['lease_losses']} lease losses and {bad['leader_changes']} "
            "leader changes where the target is zero."
        )
    if "trouble" in sections:
        found += _trouble_shortfalls(sections["trouble"])
    if "security" in sections:
        found += report_security.shortfalls(sections["security"])
    return found or ["- Nothing: every figure met the design's expectation in this run."]


def _bad_network(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"Not measured: {result['skipped']}."
    return (
        f"{result['minutes']} minutes through a {result['method']}: "
        f"{result['lease_losses']} lease losses of the far sidecar, "
        f"{result['leader_changes']} leader changes (leaders seen: "
        f"{', '.join(result['leaders_seen']) or 'none'})."
    )


def _scale(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "## Scale", "", EXPLAIN["scale"], "",
        "| sessions | keepalives needed/s | achieved/s | failed | keepalive p50 / p99 ms "
        "| fan-out p50 / p99 ms | etcd CPU (cores) | etcd RSS (MiB, 3 members) |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        ka, fo = r["keepalive_latency"], r["watch_fanout"]
        out.append(
            f"| {r['sessions']} | {r['keepalives_needed_per_s']} "
            f"| {r['keepalives_achieved_per_s']} "
            f"| {r['keepalive_failures']} | {_num(ka['median'], 1)} / {_num(ka['p99'], 1)} "
            f"| {_num(fo['median'], 1)} / {_num(fo['p99'], 1)} | {r['etcd_cpu_cores']} "
            f"| {r['etcd_rss_mb_total']} |"
        )
    return [*out, ""]


def _local_api(api: dict[str, Any]) -> list[str]:
    out = ["## Local API", "", EXPLAIN["local_api"], ""]
    if "skipped" in api:
        out.append(f"Not measured: {api['skipped']}.")
    else:
        out += ["| route | p50 ms | p99 ms | requests/s | non-2xx |", "|---|---|---|---|---|"]
        for route, r in api.items():
            out.append(
                f"| `{route}` | {_num(r.get('p50_ms'))} | {_num(r.get('p99_ms'))} "
                f"| {_num(r['requests_per_s'], 0)} | {r['non_2xx']} |"
            )
    return [*out, ""]


def _footprint(f: dict[str, Any]) -> list[str]:
    return [
        "## Footprint", "", EXPLAIN["footprint"], "",
        f"- idle {f['idle_seconds']} s: RSS {f['rss_mb']} MiB, {f['cpu_seconds']} CPU seconds, "
        f"{f['etcd_requests_per_s']} etcd requests/s",
        f"- `ringside status` wall time: median {f['status_command_s']['median']} s "
        f"(max {f['status_command_s']['max']} s) over 20 runs",
        "",
    ]  # fmt: skip


def _remeasured(results: dict[str, Any]) -> list[str]:
    """Sections measured again since the run above (`python -m bench --only ...`)."""
    lines = []
    for r in results.get("remeasured", []):
        quick = ", quick mode" if r.get("quick") else ""
        lines.append(
            f"Re-measured {r['date']} by `python -m bench --only {','.join(r['sections'])}` "
            f"({r.get('wall_time_s', '?')} s{quick}): {', '.join(r['sections'])}."
        )
    if results.get("partial"):
        lines.append("Only the sections below were measured in this run.")
    return [*lines, ""] if lines else []


def chaos_section(previous: str) -> str:
    """The chaos section of a previous report, markers included; bare markers if it has none.

    >>> chaos_section("# old\\n<!-- chaos:begin -->\\nseed 7\\n<!-- chaos:end -->\\n")
    '<!-- chaos:begin -->\\nseed 7\\n<!-- chaos:end -->'
    >>> chaos_section("# old, no markers")
    '<!-- chaos:begin -->\\n<!-- chaos:end -->'
    """
    begin = previous.find(CHAOS_BEGIN)
    end = previous.find(CHAOS_END, begin) if begin >= 0 else -1
    if end < 0:
        return f"{CHAOS_BEGIN}\n{CHAOS_END}"
    return previous[begin : end + len(CHAOS_END)]


def render_markdown(results: dict[str, Any], previous: str | None = None) -> str:
    """The report for `results`, ending with the chaos section of `previous`, the report it
    replaces (by default `docs/benchmarks.md` as it is now)."""
    if previous is None:
        previous = DOC.read_text() if DOC.exists() else ""
    m, s = results["machine"], results["sections"]
    out = [
        "# ringside benchmarks",
        "",
        f"Measured {m['date']} by `make bench` ({'quick mode, ' if results['quick'] else ''}"
        f"{results.get('wall_time_s', '?')} s): {m['cpus']} CPUs, {m['memory_gb']} GiB, "
        f"{m['platform']}, Python {m['python']}, etcd {m['etcd']} (3 members on loopback). "
        "Medians and p99 over the trials; ratios are median / reference. Raw numbers: "
        "`bench/results/latest.json`.",
        "",
        *_remeasured(results),
        ANCHORS,
        "",
    ]
    for key in (
        "floors", "crash_detection", "crash_failover", "failover_during_etcd_election",
        "graceful_handover", "orchestrator_failover", "switchover", "convergence",
        "crash_restart", "etcd_member_fault",
    ):  # fmt: skip
        if key not in s:
            continue  # results written before the scenario existed
        rows = list(s[key].values()) if isinstance(s[key], dict) else s[key]
        out += [
            f"## {key.replace('_', ' ').capitalize()}",
            "",
            EXPLAIN[key],
            "",
            *_figures(rows),
            "",
        ]
    if "scale" in s:
        out += _scale(s["scale"])
    if "local_api" in s:
        out += _local_api(s["local_api"])
    if "footprint" in s:
        out += _footprint(s["footprint"])
    if "bad_network" in s:
        out += [
            "## False expirations under a bad network", "", EXPLAIN["bad_network"], "",
            _bad_network(s["bad_network"]), "",
        ]  # fmt: skip
    if "trouble" in s:
        out += ["## Getting out of trouble", "", EXPLAIN["trouble"], "", *_trouble(s["trouble"])]
        out.append("")
    if "security" in s:
        security = report_security.table(s["security"])
        out += ["## Cost of TLS + auth", "", report_security.EXPLAIN, "", *security, ""]
    out += ["## Short of the design's expectations", "", *_shortfalls(s), ""]
    if NOTES.exists():
        out += ["## Reading these figures", "", NOTES.read_text().strip(), ""]
    out += [chaos_section(previous), ""]
    return "\n".join(out)
