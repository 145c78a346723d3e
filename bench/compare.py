"""One figure measured on two setups: the cost of the second over the first, in percent, and
how far noise alone could move that cost (a bootstrap interval)."""

from __future__ import annotations

import random
import statistics
from typing import Any

from bench.stats import Figure

RESAMPLES = 400


def cost_pct(plain: float, secure: float) -> float:
    """(secure - plain) / plain, in percent.

    >>> cost_pct(2.0, 2.5)
    25.0
    """
    return (secure - plain) / plain * 100


def _resampled_median(rng: random.Random, samples: list[float]) -> float:
    return statistics.median(rng.choices(samples, k=len(samples)))


def interval_pct(plain: list[float], secure: list[float], seed: int = 11) -> tuple[float, float]:
    """The 95 % bootstrap interval of the cost of the median: both sets of trials resampled
    with replacement. Trials that are not independent (one process's keepalives) make it too
    narrow; it says how much the trials themselves scatter, no more."""
    rng = random.Random(seed)
    costs = sorted(
        cost_pct(_resampled_median(rng, plain), _resampled_median(rng, secure))
        for _ in range(RESAMPLES)
    )
    return costs[int(0.025 * RESAMPLES)], costs[int(0.975 * RESAMPLES) - 1]


def compared(plain: Figure, secure: Figure, target_pct: float, note: str = "") -> dict[str, Any]:
    """A row of the security table: both figures, the costs and whether the target is met
    (by the cost of the median)."""
    cost = cost_pct(plain.median, secure.median)
    low, high = interval_pct(plain.samples, secure.samples)
    return {
        "name": plain.name,
        "unit": plain.unit,
        "plain": plain,
        "secure": secure,
        "cost_median_pct": round(cost, 1),
        "cost_interval_pct": [round(low, 1), round(high, 1)],
        "cost_p99_pct": round(cost_pct(plain.p99, secure.p99), 1),
        "target_pct": target_pct,
        "met": cost < target_pct,
        "note": note,
    }
