"""Figures: repeated trials reduced to median and p99, with the ratio to a floor or a TTL."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; the sample itself for one trial."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Figure:
    """One measured quantity: every trial kept, summarised on demand."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    against: str | None = None  # what the ratio is to: "TTL 5 s", "etcd floor", ...
    reference: float | None = None  # that quantity, in the same unit
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    @property
    def ratio(self) -> float | None:
        if not self.reference or not self.samples:
            return None
        return self.median / self.reference

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "unit": self.unit,
            "trials": len(self.samples),
            "median": round(self.median, 4) if self.samples else None,
            "p99": round(self.p99, 4) if self.samples else None,
            "against": self.against,
            "reference": self.reference,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
            "samples": [round(s, 4) for s in self.samples],
            "note": self.note,
        }
