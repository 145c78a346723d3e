"""The flap report: per node, how often it left and came back, for how long it was gone, and
why it left, from the cluster history (`sidecar.journal`). The table the old monitoring log was
trying to be. Standard library only: `ringside flaps` must start fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from sidecar.events import ClusterEvent


@dataclass
class NodeFlaps:
    """One node's absences within the report's window."""

    node_id: str
    left: int = 0  # times it left
    returned: int = 0  # times it came back after leaving
    absent_s: float = 0.0  # total time gone (until now, for an absence not over)
    longest_s: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)  # "stopped", "expired"
    gone_since: float | None = None  # still absent at the end, since then

    def document(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "left": self.left,
            "returned": self.returned,
            "absent_s": round(self.absent_s, 1),
            "longest_s": round(self.longest_s, 1),
            "reasons": dict(self.reasons),
            "absent_now": self.gone_since is not None,
        }

    def leave(self, at: float, reason: str) -> None:
        self.left += 1
        self.reasons[reason] += 1
        self.gone_since = at

    def come_back(self, at: float) -> None:
        if self.gone_since is not None:
            self._absence(at - self.gone_since)
            self.returned += 1
            self.gone_since = None

    def close(self, now: float) -> None:
        """The report ends at `now`: an absence not over counts until then."""
        if self.gone_since is not None:
            self._absence(now - self.gone_since)

    def _absence(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.absent_s += seconds
        self.longest_s = max(self.longest_s, seconds)


def flap_report(events: Iterable[ClusterEvent], now: float) -> list[NodeFlaps]:
    """Every node that left at least once in `events`, most absences first.

    `events` are the history's believed entries (`sidecar.history_entries`). A node leaves
    or joins at most once per revision: two leaders' differing records of one leave (one of
    them forged) count once."""
    nodes: dict[str, NodeFlaps] = {}
    seen: set[tuple[int, str, str]] = set()
    for event in sorted(events, key=lambda e: (e.revision, e.at)):
        node = event.detail.get("node_id")
        if not isinstance(node, str) or (event.revision, event.kind, node) in seen:
            continue
        seen.add((event.revision, event.kind, node))
        if event.kind == "member_left":
            reason = str(event.detail.get("reason") or "unknown")
            nodes.setdefault(node, NodeFlaps(node)).leave(event.at, reason)
        elif event.kind == "member_joined" and node in nodes:
            nodes[node].come_back(event.at)
    for flaps in nodes.values():
        flaps.close(now)
    return sorted(nodes.values(), key=lambda f: (-f.left, -f.absent_s, f.node_id))


def flap_rows(report: list[NodeFlaps]) -> list[str]:
    """A header and one aligned row per node."""
    header = ["NODE", "LEFT", "BACK", "ABSENT", "LONGEST", "WHY", "NOW"]
    rows = [header]
    for f in report:
        why = ", ".join(f"{reason} {n}" for reason, n in sorted(f.reasons.items()))
        rows.append(
            [
                f.node_id,
                str(f.left),
                str(f.returned),
                duration(f.absent_s),
                duration(f.longest_s),
                why,
                "absent" if f.gone_since is not None else "live",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def duration(seconds: float) -> str:
    """`seconds` as people read it: 42s, 3m05s, 2h10m, 3d04h."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def parse_since(text: str) -> float:
    """A duration like 90s, 15m, 1h, 7d, as seconds; ValueError (one line) when it is not."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not (number.isascii() and number.isdigit()) or len(number) > 9:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    return int(number) * units[unit]
