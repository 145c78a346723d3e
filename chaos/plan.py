"""The campaign's plan, drawn from the seed alone: which faults each round, on whom, for how long.

Targets are named by role ("the leader", "a follower", "an etcd member"), never by node, so
the same seed replays the same sequence of faults whoever happens to lead; the nodes a role
stands for are chosen at run time from the round's own seed (`RoundPlan.target_seed`).

Every fault kind comes up as a round's first fault once per pass through a shuffled deck,
so a campaign of at least `len(kinds)` rounds tries every kind; about half the rounds add a
second fault that does not clash with the first (different resources), started up to
`MAX_STAGGER_S` later, three times as likely on the same role (a leader cut off *and*
stopped is where split brains hide). Half the holds are short (under one TTL), half outlast
the lease and the validity budget (TTL + 2.5 s up to 2 x TTL + 1 s): only those let a
lease expire, a frozen leader's deadline pass, or a cut-off view go stale.

>>> rounds = make_plan(7, 3, ttl=5)
>>> [r.index for r in rounds], rounds == make_plan(7, 3, ttl=5)
([1, 2, 3], True)
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

MAX_STAGGER_S = 1.5
MIN_HOLD_S = 1.0


class Fault(enum.Enum):
    """One fault kind: a verb on a role."""

    KILL_LEADER = "kill-leader"  # kill -9, restarted at heal with the same node id and lock
    KILL_FOLLOWER = "kill-follower"
    TERM_LEADER = "term-leader"  # SIGTERM: a graceful stop, restarted at heal
    TERM_FOLLOWER = "term-follower"
    STOP_LEADER = "stop-leader"  # SIGSTOP, SIGCONT at heal
    STOP_FOLLOWER = "stop-follower"
    RESIGN_LEADER = "resign-leader"  # POST /v1/leader/resign
    ETCD_KILL_MEMBER = "etcd-kill-member"  # any one member, kill -9
    ETCD_PAUSE_MEMBER = "etcd-pause-member"  # any one member, SIGSTOP
    ETCD_KILL_RAFT_LEADER = "etcd-kill-raft-leader"
    ETCD_QUORUM_LOSS = "etcd-quorum-loss"  # two of three members killed or paused
    CUT_BOTH_LEADER = "cut-both-leader"  # the sidecar's path to etcd: nothing passes
    CUT_BOTH_FOLLOWER = "cut-both-follower"
    CUT_ANSWERS_LEADER = "cut-answers-leader"  # requests land, answers are lost
    CUT_ANSWERS_FOLLOWER = "cut-answers-follower"
    CUT_REQUESTS_LEADER = "cut-requests-leader"  # requests lost, etcd's messages arrive
    CUT_REQUESTS_FOLLOWER = "cut-requests-follower"

    @property
    def on_leader(self) -> bool:
        return self.value.endswith("-leader") and not self.on_etcd

    @property
    def on_etcd(self) -> bool:
        return self.value.startswith("etcd-")

    @property
    def resource(self) -> str:
        """What the fault takes hold of: two faults of one round never share one, except
        two followers' processes or paths (different followers are picked)."""
        if self.on_etcd:
            return "etcd"
        role = "leader" if self.on_leader else "follower"
        return f"{'route' if self.value.startswith('cut-') else 'process'}:{role}"


ALL_FAULTS: tuple[Fault, ...] = tuple(Fault)


def parse_faults(text: str) -> tuple[Fault, ...]:
    """`kill-leader,cut-both-follower` -> those kinds; `all` or empty -> every kind."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or names == ["all"]:
        return ALL_FAULTS
    known = {f.value: f for f in Fault}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown fault kind(s): {', '.join(unknown)}; known: {', '.join(known)}")
    return tuple(known[n] for n in names)


def compatible(first: Fault, second: Fault) -> bool:
    """Whether two faults can be held in one round."""
    if first.resource != second.resource:
        return True
    return first.resource in ("process:follower", "route:follower")


@dataclass(frozen=True)
class FaultPlan:
    fault: Fault
    delay_s: float  # after the round's first fault


@dataclass(frozen=True)
class RoundPlan:
    index: int
    faults: tuple[FaultPlan, ...]
    hold_s: float  # from the first fault to the heal
    target_seed: int

    def describe(self) -> str:
        return " + ".join(f.fault.value for f in self.faults)


def max_hold_s(ttl: int) -> float:
    """The longest hold: past two lease TTLs, short enough for 30 rounds in ten minutes."""
    return 2.0 * ttl + 1.0


def _hold(rng: random.Random, ttl: int, longest: float) -> float:
    long_from = ttl + 2.5
    if longest <= long_from:
        return rng.uniform(min(MIN_HOLD_S, longest), longest)
    if rng.random() < 0.5:
        return rng.uniform(MIN_HOLD_S, min(float(ttl), longest))
    return rng.uniform(long_from, longest)


def _same_role(first: Fault, second: Fault) -> bool:
    return not first.on_etcd and not second.on_etcd and first.on_leader == second.on_leader


def make_plan(
    seed: int,
    rounds: int,
    *,
    ttl: int,
    kinds: Sequence[Fault] = ALL_FAULTS,
    max_hold: float | None = None,
    second_fault_p: float = 0.5,
) -> list[RoundPlan]:
    rng = random.Random(seed)
    longest = max_hold if max_hold is not None else max_hold_s(ttl)
    deck: list[Fault] = []
    plan = []
    for index in range(1, rounds + 1):
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        first = deck.pop()
        faults = [FaultPlan(first, 0.0)]
        partners = [k for k in kinds if compatible(first, k)]
        if partners and rng.random() < second_fault_p:
            weights = [3 if _same_role(first, k) else 1 for k in partners]
            second = rng.choices(partners, weights)[0]
            faults.append(FaultPlan(second, round(rng.uniform(0, MAX_STAGGER_S), 3)))
        hold = max(round(_hold(rng, ttl, longest), 3), faults[-1].delay_s + 0.5)
        plan.append(RoundPlan(index, tuple(faults), hold, rng.getrandbits(32)))
    return plan
