"""The `security` section of `docs/benchmarks.md`: TLS + auth against plain, row by row."""

from __future__ import annotations

from typing import Any

EXPLAIN = (
    "What TLS + auth cost (`bench/security.py`, issue 11). Two fresh three-member etcd clusters "
    "side by side: plain HTTP without auth, and the production setup: TLS with client "
    "certificates required, etcd auth on with one user and role per node (made by what "
    "`ringside auth init` runs). On each: the floors above, crash failover (kill -9 the leader "
    "sidecar; the sidecars log in as their own node users over TLS), and the scale row at 1,000 "
    "sessions (one non-root user whose role has a node's shape: read the cluster prefix, write "
    "the member keys; the client's request deadline is 10 s in both setups, see "
    "`bench/security.py`), and at 200 sessions for context. The setups take turns, so the "
    "machine's slow spells fall on both. Cost = (TLS + auth - plain) / plain; the target is met "
    "when the cost of the median is under the target. The interval is a 95 % bootstrap of that "
    "cost over the trials: where it spans the target, noise alone could decide the verdict."
)


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    digits = 2 if unit == "cores" else 3
    suffix = "" if unit == "cores" else f" {unit}"
    return f"{value:.{digits}f}{suffix}"


def _pct(value: float) -> str:
    return f"{value:+.1f} %"


def _verdict(row: dict[str, Any]) -> str:
    low, high = row["cost_interval_pct"]
    verdict = "yes" if row["met"] else "**no**"
    if row.get("context"):
        verdict = "no" if not row["met"] else verdict  # not a target of its own
    if low < row["target_pct"] < high:
        verdict += " (within noise)"
    return verdict


def table(section: dict[str, Any]) -> list[str]:
    target = f"{section['target_pct']:g} %"
    lines = [
        f"| figure | trials (plain / TLS + auth) | plain median / p99 | TLS + auth median / p99 "
        f"| cost of the median | 95 % interval | cost of the p99 | met (< {target}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in section["rows"]:
        plain, secure, unit = row["plain"], row["secure"], row["unit"]
        low, high = row["cost_interval_pct"]
        lines.append(
            f"| {row['name']} | {plain['trials']} / {secure['trials']} "
            f"| {_value(plain['median'], unit)} / {_value(plain['p99'], unit)} "
            f"| {_value(secure['median'], unit)} / {_value(secure['p99'], unit)} "
            f"| {_pct(row['cost_median_pct'])} | {_pct(low)} .. {_pct(high)} "
            f"| {_pct(row['cost_p99_pct'])} | {_verdict(row)} |"
        )
    lines += ["", *(f"- {line}." for line in section["scale"])]
    lines += [f"- {row['name']}: {row['note']}." for row in section["rows"] if row["note"]]
    return lines


def shortfalls(section: dict[str, Any]) -> list[str]:
    found = []
    for row in section["rows"]:
        if not row["met"] and not row.get("context"):
            unit = row["unit"]
            found.append(
                f"- TLS + auth: {row['name']} costs {_pct(row['cost_median_pct'])} over plain "
                f"(median {_value(row['plain']['median'], unit)} -> "
                f"{_value(row['secure']['median'], unit)}); target < {row['target_pct']:g} %."
            )
    return found
