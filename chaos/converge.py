"""Convergence after a heal, judged like `tests.fleet.wait_until_converged` (every sidecar
reports exactly the expected members and one same leader, which alone says it leads) but
returning a result instead of failing a test: the campaign records a miss and goes on.

>>> status = {"members": [{"node_id": "a"}, {"node_id": "b"}], "leader": "a", "epoch": 7}
>>> judge({"a": {**status, "is_leader": True}, "b": {**status, "is_leader": False}},
...       expected={"a", "b"}, eligible={"a"})
(True, 'a leads epoch 7')
>>> judge({"a": None, "b": {**status, "is_leader": False}}, expected={"a", "b"}, eligible={"a"})
(False, 'a: no answer; b: leader a epoch 7, members a,b')
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from chaos.probe import Prober
from tests.fleet import Sidecar, agreed_leader


@dataclass(frozen=True)
class Convergence:
    converged: bool
    took_s: float  # from `since` to the answers that agreed (or to giving up)
    leader: str | None
    epoch: int | None
    detail: str  # the agreement, or what the last answers said


def judge(
    statuses: Mapping[str, dict[str, Any] | None],
    *,
    expected: Collection[str],
    eligible: Collection[str],
) -> tuple[bool, str]:
    """Whether these `/v1/status` answers (by node) agree on `expected` and one leader
    (`tests.fleet.agreed_leader`), and in words what they agreed on or each one said."""
    answered = [None if s is None else {"node_id": n, **s} for n, s in statuses.items()]
    leader = agreed_leader(answered, expected, eligible)
    if leader is not None:
        return True, f"{leader['leader']} leads epoch {leader['epoch']}"
    parts = []
    for node, status in sorted(statuses.items()):
        if status is None:
            parts.append(f"{node}: no answer")
            continue
        try:
            members = ",".join(sorted(str(m["node_id"]) for m in status["members"]))
            said = f"leader {status['leader']} epoch {status['epoch']}"
        except (KeyError, TypeError):
            parts.append(f"{node}: unreadable status")
            continue
        mark = " (claims)" if status.get("is_leader") is True else ""
        parts.append(f"{node}: {said}{mark}, members {members}")
    return False, "; ".join(parts)


async def wait_converged(
    prober: Prober,
    sidecars: Mapping[str, Sidecar],
    *,
    expected: Collection[str],
    eligible: Collection[str],
    since: float,
    within_s: float,
    interval_s: float = 0.05,
) -> Convergence:
    """Poll every sidecar's `/v1/status` until they agree, or `within_s` after `since`."""
    detail = "no answers"
    while True:
        names = sorted(sidecars)
        answers = await asyncio.gather(*(prober.request(sidecars[n], "/v1/status") for n in names))
        ok, detail = judge(
            {n: a.body for n, a in zip(names, answers, strict=True)},
            expected=expected,
            eligible=eligible,
        )
        received = max(a.received for a in answers)
        if ok:
            statuses = [a.body for a in answers if a.body is not None]
            leader = next(s for s in statuses if s.get("is_leader") is True)
            return Convergence(True, received - since, leader["leader"], leader["epoch"], detail)
        if time.monotonic() > since + within_s:
            return Convergence(False, time.monotonic() - since, None, None, detail)
        await asyncio.sleep(interval_s)
