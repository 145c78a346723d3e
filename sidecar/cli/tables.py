"""How `ringside status`, `members` and `--watch` print: a table for people, JSON/YAML for programs.

    ringrift: leader hetzner-cpu1 (epoch 42), 5 alive, quorum ok (3/3 voters)
    NODE            ROLE      STATE  ADDRESS       SINCE
    hetzner-cpu1    leader    alive  203.0.113.21  3m12s
    lambda-gh200-3  observer  alive  100.64.0.88   41s
    missing: mac-studio, nebius-h100-3

A member's state is "alive" while the view it comes from is in sync with an etcd quorum, and
"stale" otherwise: a sidecar cut off from etcd keeps showing the last members it saw.

Everything shown comes from etcd, where any node can write its own record (rule 14): text for
a terminal goes through `safe`, so a label or an address cannot move the cursor, recolour the
screen or forge a line of output.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from sidecar.cli.reports import LeaderReport, MemberInfo, StatusReport
from sidecar.compat import UTC, parse_iso_time
from sidecar.flaps import duration

FORMATS: Final = ("table", "wide", "json", "yaml")


def safe(text: str) -> str:
    r"""`text` fit for a terminal: every character that is not printable (escape sequences,
    newlines, bidirectional overrides) shown as its escape instead.

    >>> print(safe("gpu=\x1b[2Jh100\nfake line"), safe("hetzner-cpu1"))
    gpu=\x1b[2Jh100\nfake line hetzner-cpu1
    """
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def age(since: str | None, now: float | None = None) -> str:
    """How long ago `since` (ISO time) was, for a table cell.

    >>> age("2024-05-01T12:00:00+00:00", now=1714564992.0)
    '3m12s'
    >>> age("2024-05-01T12:00:00+00:00", now=1714572000.0), age(None), age("soon")
    ('2h00m', '-', '-')
    """
    if not since:
        return "-"
    try:
        started = parse_iso_time(since).timestamp()
    except ValueError:
        return "-"
    return duration(max(0.0, (time.time() if now is None else now) - started))


def summary(report: StatusReport) -> str:
    """The one line that says whether the cluster is healthy."""
    if report.leader is None:
        leader = "no leader"
    else:
        leader = f"leader {report.leader} (epoch {report.epoch})"
    quorum = "quorum ok" if report.quorum_ok else "quorum LOST"
    voters = f"{report.voters_healthy}/{report.voters_total} voters"
    line = f"{report.cluster}: {leader}, {report.alive} alive, {quorum} ({voters})"
    down = sorted(m.node_id for m in report.members if m.orchestrator_healthy is False)
    if down:  # a live sidecar whose orchestrator fails its check: say so where it is read first
        line += f"; orchestrator DOWN on {', '.join(down)}"
    if report.leadership_note:
        line += f"; {safe(report.leadership_note)}"
    if report.health_handovers:
        line += f"; handed over {report.health_handovers}x for its orchestrator"
    return line


_ORCHESTRATOR_STATE: Final = {True: "up", False: "DOWN", None: "-"}


def member_rows(
    members: Sequence[MemberInfo], *, state: str = "alive", wide: bool = False
) -> list[str]:
    """A header and one aligned row per member."""
    header = ["NODE", "ROLE", "STATE", "ADDRESSES" if wide else "ADDRESS", "SINCE"]
    if wide:
        header += ["ORCHESTRATOR", "VERSION", "LABELS"]
    rows = [header]
    for m in members:
        addresses = ",".join(m.addresses) if wide else (m.addresses[0] if m.addresses else "")
        row = [m.node_id, m.role, state, addresses or "-", age(m.since)]
        if wide:
            row.append(_ORCHESTRATOR_STATE[m.orchestrator_healthy])
            row.append(m.version or "-")
            row.append(",".join(f"{k}={v}" for k, v in sorted(m.labels.items())) or "-")
        rows.append([safe(cell) for cell in row])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def status_text(report: StatusReport, *, wide: bool = False) -> str:
    state = "alive" if report.synced and report.quorum_ok else "stale"
    lines = [summary(report), *report.handover]
    if report.etcd_connection != "connected" or report.etcd_error:
        lines.append(f"etcd: {report.etcd_connection}" + _suffix(report.etcd_error))
    if report.history_violation:
        lines.append(f"etcd history: {report.history_violation}")
    if report.members:
        lines += member_rows(report.members, state=state, wide=wide)
    if report.inventory_missing:
        lines.append(f"missing: {', '.join(report.inventory_missing)}")
    return "\n".join(safe(line) for line in lines)


def document(value: Mapping[str, Any] | Sequence[Any], output: str) -> str:
    """A JSON or YAML rendering of a document (yaml is imported only when asked for)."""
    if output == "yaml":
        import yaml  # noqa: PLC0415  # only `-o yaml` pays for it

        return yaml.safe_dump(_plain(value), sort_keys=False).rstrip("\n")  # non-ASCII escaped
    return json.dumps(value, indent=2)


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, which `yaml.safe_dump` takes."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def leader_text(report: LeaderReport) -> str:
    if report.leader is None and report.last_known is not None:
        text = f"no leader known ({report.reason}); last known: {report.last_known}"
    elif report.leader is None:
        text = f"no leader ({report.reason})"
    else:
        text = f"leader {report.leader} (epoch {report.epoch})"
    if report.is_self:
        text += f"; this node, valid for {report.valid_for_s or 0:.1f} s"
    return "\n".join(safe(line) for line in (text, *report.handover))


def stamped(sentence: str, at: float | None = None) -> str:
    """`sentence` after the UTC time `at` (default now), with the zone, as the logs and
    `ringside events` print it: ``2026-05-01 12:03:07Z ...``."""
    when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return f"{when:%Y-%m-%d %H:%M:%S}Z {safe(sentence)}"


def _suffix(text: object) -> str:
    return f": {text}" if text else ""
