"""The sidecar: session, membership, election, view and health wired into one control loop.

Background tasks keep the parts current (keepalives, the cluster watch, quorum checks); the
control loop decides. Each cycle ends in one sentence (logged at debug, shown by status) and an
unexpected exception at the loop top is logged with its traceback and the loop carries on.

The loop's rules, in order:
1. leadership answered and then lost, for any reason -> that epoch is dead: drop the session
   and start over with a new lease (safety rule 5). "Answered" counts every time
   `leadership()` said leader, to the API as much as to the loop. When our key still leads in
   etcd, the old lease is kept (never campaigned on again) until the validity we reported
   (`valid_for_s`) has run out: a successor must not start inside a promise we made. Only
   a caller's own resign, or SIGTERM, releases it early;
2. no live session -> revoke the old lease if any (best effort), open a new one, register the
   member key (a duplicate node id stops the sidecar), then campaign if eligible;
3. our keys must be in the view as we wrote them (rule 12): a member key that was deleted,
   overwritten or left on no lease is written again, ending our candidacy in the same
   transaction (a candidacy must never outlive the membership it rests on); a candidate key
   that is gone is made afresh, with a new and higher create_revision;
4. a node that must not lead (rule 7: etcd's history went backwards; or its node id is held
   by another live lease) withdraws its candidacy, so its key cannot block the election;
5. leadership is recomputed at every read (`Agent.leadership()`), never cached; the loop only
   notices transitions to fire the role hooks and log them.

What the sidecar says is only as fresh as its last contact with an etcd quorum (rule 11): a
successful keepalive (every TTL/3) or a linearizable read (each full load of the view). Once
that is older than the validity budget (TTL - margin) it names no leader, reports the last one
as such, and is not ready. And stopping is a step down first (rule 13): from the moment SIGTERM
arrives nothing answers "leader", before any request goes to etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from sidecar.asyncio_compat import timeout
from sidecar.changes import QuorumChanges, view_changes
from sidecar.deadline import within
from sidecar.election import (
    Campaign,
    LastKnown,
    Leadership,
    decide_leadership,
    enter_election,
    release,
)
from sidecar.event_log import EventLog
from sidecar.events import ClusterEvent
from sidecar.handover import LeaderChange, Why, requested
from sidecar.health_policy import HealthPolicy
from sidecar.health_rule import orchestrator_ok
from sidecar.history import HistoryGuard
from sidecar.hooks import RoleHooks
from sidecar.journal import Journal, read_history
from sidecar.keys import Keys
from sidecar.membership import DuplicateNode, MemberKey
from sidecar.orchestrator import OrchestratorWatch
from sidecar.pending import PendingSwitchover
from sidecar.preference import Preference
from sidecar.promise import PromiseFile
from sidecar.proof import ProofOfLife
from sidecar.quorum import QuorumHealth, QuorumMonitor
from sidecar.session import Session
from sidecar.settings import RingsideConfig
from sidecar.state import LeaseState, NodeState
from sidecar.store.base import Store
from sidecar.store.errors import LeaseNotFound, StoreError
from sidecar.store.model import Compare, Delete, Header
from sidecar.view import ClusterView, ViewKeeper

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 1.0  # etcd's share of a SIGTERM: the process must be gone within 2 s
LEAVING_NOTICE_S = 0.5  # of that, for the leaving mark (and our candidacy's end) first
SHUTDOWN_HOOK_GRACE_S = 0.3  # then hooks still running are left to finish on their own
TICK_S = 0.1  # how often the loop looks at the validity clock between other wake-ups
REQUEST_S = 30.0  # a switchover request not done within this is withdrawn (the default)
RESIGNED = Why("resign", "resigned")  # a caller's own resign (ringside resign)
REMINDER_S = 60.0  # a standing problem (history violation) is logged again at most this often


@dataclass(frozen=True)
class Parts:
    """The collaborators an agent drives. `sidecar.daemon.build_agent` assembles them; the
    agent subscribes to the view keeper and the quorum monitor, and reads the rest."""

    keys: Keys
    member: MemberKey
    view: ViewKeeper
    quorum: QuorumMonitor
    hooks: RoleHooks
    events: EventLog
    guard: HistoryGuard
    orchestrator: OrchestratorWatch | None
    journal: Journal | None = None  # the cluster history in etcd, written while we lead


class SwitchoverRefused(Exception):
    """A switchover that cannot happen, and why (one sentence for the caller)."""


class Agent:
    """One node's sidecar. `run()` until `stop` is set; read state with `leadership()` and
    `view`; `resign()` hands leadership over."""

    def __init__(
        self,
        config: RingsideConfig,
        node_id: str,
        store: Store,
        parts: Parts,
        *,
        previous_instance: str | None = None,
        promises: PromiseFile | None = None,
    ) -> None:
        self.config = config
        # Rule 22: what our predecessor promised binds us too (sidecar.promise).
        self.promises = promises
        self._inherited_until = time.monotonic() + (promises.inherited() if promises else 0.0)
        self.previous_instance = previous_instance
        self.node_id = node_id
        self.store = store
        self.keys = parts.keys
        self.member = parts.member
        self.events = parts.events
        self.guard = parts.guard
        self.hooks = parts.hooks
        self.keeper = parts.view
        self.quorum = parts.quorum
        self.orchestrator = parts.orchestrator
        self.journal = parts.journal
        self.liveness = ProofOfLife(store, self.keys, node_id, self.member)
        self.keeper.listen(self)
        self.quorum.listen(self._quorum_changed)
        self.session: Session | None = None
        self.candidacy: Campaign | None = None  # our candidate key, while we stand
        self.last_cycle = "starting"
        self.farewell = "not started"  # how the last shutdown went, for the final log line
        self._keepalive_listeners: list[Callable[[float], None]] = []
        self.conflict: str | None = None  # our node id held by another live lease, at run time
        self._claimed = False  # the elected hook fired for our current campaign
        self._answered: int | None = None  # an epoch `leadership()` said we lead
        self._leaving: str | None = None  # set once we stopped claiming for good (shutdown)
        self._leaving_epoch: int | None = None  # the epoch we led when we stopped
        self._confirmed_at: float | None = None  # monotonic; last answer through a quorum
        self._promised_until = 0.0  # monotonic; the furthest validity we reported as leader
        self._retiring_until = 0.0  # monotonic; keep the old session (never campaign) until then
        self._retry_at = 0.0  # monotonic; when to try registering again after a conflict
        self._suspended_since: float | None = None  # monotonic: our validity ran out then
        self._wake = asyncio.Event()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._stale_leases: list[int] = []
        self._quorum_changes = QuorumChanges()
        self._restoring_candidate = False
        self._reminded_at = 0.0
        self._dropped = 0  # revision of our last switchover request deleted once stale
        self._request_deadline = 0.0  # monotonic: our switchover request is withdrawn then
        self._held: tuple[int | None, float] = (None, 0.0)  # (epoch, monotonic) we began leading
        checks = config.orchestrator
        aware = config.leader.eligible and checks.leadership  # decision 0015's rule applies
        self.orchestrator_policy = HealthPolicy(
            node_id,
            self.orchestrator if aware else None,
            checks.rejoin_after,
            config.lease_ttl,
            withdraw=self._withdraw,
            resign=self.resign,
            record=self._record,
        )
        self.preference = Preference(
            config.leader.preferred or None, stable_after=config.leader.preferred_after
        )
        # A request nobody can complete stops blocking the rules (issue 21): the switchover
        # hold is the most a leader may wait before honouring one.
        self.pending = PendingSwitchover(grace_s=config.leader.switchover_hold + 1.0)
        self._preference_asked: int | None = None  # the epoch we asked to hand over for it
        self.last_change: LeaderChange | None = None  # the latest leader change seen, and why

    # --- reading -------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """Our lease is still valid by the validity clock (rule 11): not "we once wrote the
        key", which stays true long after a lease has lapsed unseen."""
        session = self.session
        if session is None or session.lost.is_set():
            return False
        return session.remaining() > self.config.leader.validity_margin

    @property
    def view(self) -> ClusterView:
        return self.keeper.current

    @property
    def health(self) -> QuorumHealth:
        return self.quorum.current

    @property
    def budget_s(self) -> float:
        """How long what etcd last confirmed may be believed: the validity budget."""
        ttl = self.session.lease.ttl if self.session is not None else self.config.lease_ttl
        return ttl - self.config.leader.validity_margin

    def confirmed_age(self, now: float | None = None) -> float | None:
        """Seconds since etcd last answered us through a quorum; None before the first time."""
        if self._confirmed_at is None:
            return None
        return max(0.0, (time.monotonic() if now is None else now) - self._confirmed_at)

    def stale_for(self, now: float | None = None) -> float | None:
        """Seconds without news from a quorum, once that is past the validity budget; else None."""
        age = self.confirmed_age(now)
        return age if age is not None and age > self.budget_s else None

    @property
    def stopping(self) -> bool:
        """`stop_claiming` was called: the sidecar is on its way out."""
        return self._leaving is not None

    @property
    def retiring(self) -> bool:
        """We stepped down and keep our old lease only until the validity we gave runs out;
        until then etcd may still show our old key as the leader's."""
        return self._retiring_until > time.monotonic()

    def blocked(self) -> str | None:
        """A reason this node must not lead whatever the election says: etcd's history went
        the wrong way (rule 7), another live lease holds our node id, or an eligible sidecar
        of the older key layout is running (decision 0010).

        Quorum loss (rule 8) needs no rule of its own here: without quorum no keepalive
        succeeds, so the validity clock runs out within TTL - margin. The quorum check is
        reported, not obeyed, so one slow status probe cannot depose a healthy leader.
        """
        return self.guard.violation or self.conflict or self._older_layout_beside_us()

    def _older_layout_beside_us(self) -> str | None:
        """Why we must not stand while an eligible ringside 0.1 sidecar runs: it cannot see a
        node-named candidate key, so it would lead beside us (decision 0010)."""
        if not self.config.leader.eligible:
            return None
        older = self.view.older_layout_candidates(but=self.node_id)
        if not older:
            return None
        names = ", ".join(
            f"{m.node_id} (ringside {m.record.version if m.record else '?'})" for m in older
        )
        return (
            f"waiting for {names} to be upgraded or stopped: an older sidecar cannot see "
            "our candidate key"
        )

    def state(self) -> NodeState:
        """Everything this sidecar knows, as of now, for the API, `/ready` and metrics.

        Leadership is decided here, once, so every field agrees with it (and it counts as an
        answer given, rule 5, like `leadership()`)."""
        now = self.leadership()
        session = self.session
        lease = None
        if session is not None:
            lease = LeaseState(session.lease_id, session.lease.ttl, session.remaining())
        checked = self.orchestrator.current if self.orchestrator is not None else None
        return NodeState(
            cluster=self.config.cluster,
            node_id=self.node_id,
            leadership=now,
            view=self.view,
            quorum=self.health,
            lease=lease,
            registered=self.registered,
            history_violation=self.guard.violation,
            conflict=self.conflict,
            retiring=self.retiring,
            stopping=self.stopping,
            confirmed_age_s=self.confirmed_age(),
            orchestrator=checked,
            store=self.store.stats(),
            last_cycle=self.last_cycle,
            health_handovers=self.orchestrator_policy.handovers,
            leadership_note=self.orchestrator_policy.note if now.is_leader else None,
            switchover=self.pending.current(self.view, time.monotonic()),
            preferred=self.preference.standing,
            last_change=self.last_change,
        )

    def leadership(self) -> Leadership:
        """Whether we lead, decided now from the view, our campaign and the validity clock;
        no leader at all once the view is older than the validity budget (rule 11)."""
        if self._leaving is not None:
            return Leadership(False, None, None, None, self._leaving)
        now = decide_leadership(
            self.view,
            self.candidacy,
            self.session,
            margin_s=self.config.leader.validity_margin,
            blocked=self.blocked(),
        )
        stale = self.stale_for()
        if stale is not None:
            last = (
                LastKnown(now.leader, now.epoch, stale)
                if now.leader is not None and now.epoch is not None
                else None
            )
            reason = f"no answer from an etcd quorum for {stale:.1f} s"
            now = Leadership(False, None, None, None, reason, last, stale=True)
        if not now.is_leader:
            return self._suspended(now)
        if self._suspended_since is not None:
            log.warning(
                "leading again at epoch %s after %.1f s without a renewal: etcd confirmed our "
                "key, so nobody else could have led meanwhile",
                now.epoch, time.monotonic() - self._suspended_since,
                extra={"event": "resumed", "epoch": now.epoch},
            )  # fmt: skip
            self._suspended_since = None
        if now.is_leader:
            self._answered = now.epoch
            promise = time.monotonic() + (now.valid_for_s or 0.0)
            self._promised_until = max(self._promised_until, promise)
            if self.promises is not None and self.session is not None:
                # On disk before the answer leaves: all we may promise until the next renewal.
                furthest = self.session.valid_until - self.config.leader.validity_margin
                self.promises.cover(furthest, now.epoch)
        return now

    def _suspended(self, now: Leadership) -> Leadership:
        """`now` (not leading), marked suspended when we led and may lead again at the same
        epoch (decision 0026): our validity ran out, but our session lives and etcd, as we
        last saw it, still has our key at the head of the election, undeposed. A renewal that
        gets through proves nobody else could have led in between (it is fenced on our key
        and on every deposal); anything else ends the epoch (rule 5, `_cycle`)."""
        ours, session, view = self.candidacy, self.session, self.view
        head = view.leader
        held = self._claimed or self._answered is not None
        if not (
            held
            and ours is not None
            and session is not None
            and not session.lost.is_set()
            and head is not None
            and (head.key, head.create_revision, head.lease) == (ours.key, ours.epoch, ours.lease)
            and not any(d.epoch == ours.epoch for d in view.deposals.values())
            and self.blocked() is None
        ):
            self._suspended_since = None
            return now
        if self._suspended_since is None:
            self._suspended_since = time.monotonic()
        reason = (
            f"{now.reason} (suspended at epoch {ours.epoch}: leading again once etcd confirms "
            "our key, else stepping down)"
        )
        return replace(now, reason=reason, suspended=True)

    def _leading(self) -> Campaign | None:
        """Our candidacy while we lead (leader-only work, such as the history, runs on it)."""
        return self.candidacy if self.leadership().is_leader else None

    # --- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then hand over and leave (resign, revoke).

        The control loop is cancelled rather than awaited on stop, so a cycle stuck on an
        unreachable etcd cannot hold up shutdown. Errors that must end the sidecar (a
        duplicate node id) propagate from here.
        """
        tasks = [
            asyncio.create_task(self.keeper.run(), name="view"),
            asyncio.create_task(self.quorum.run(), name="quorum"),
        ]
        if self.orchestrator is not None:
            tasks.append(asyncio.create_task(self.orchestrator.run(), name="orchestrator"))
        if self.journal is not None:
            tasks.append(asyncio.create_task(self.journal.run(self._leading), name="journal"))
        control = asyncio.create_task(self._control_loop(), name="control")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({control, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if control.done():
                control.result()
        finally:
            self.stop_claiming()  # rule 13: before anything is sent to etcd (if not done yet)
            await _cancel_and_wait(stopping, control, *tasks)
            await self._leave()
            await self.hooks.close(grace_s=SHUTDOWN_HOOK_GRACE_S, detach=True)

    async def _control_loop(self) -> None:
        while True:
            try:
                self.last_cycle = await self._cycle()
            except StoreError as e:
                self.last_cycle = f"etcd unavailable: {e}"
                await asyncio.sleep(0.5)
            except DuplicateNode:
                raise
            except Exception:
                log.exception("control loop: unexpected error; carrying on")
                await asyncio.sleep(0.5)
            log.debug("cycle: %s", self.last_cycle)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                async with timeout(TICK_S):
                    await self._wake.wait()

    async def _cycle(self) -> str:
        if self._leaving is not None:
            return self._leaving  # nothing new is started on the way out
        self.keeper.judge_silence()
        now = self.leadership()
        if now.suspended:
            return now.reason  # nothing else moves until we lead again or step down
        if (self._claimed or self._answered is not None) and not now.is_leader:
            # Rule 5, checked before anything else: this epoch is over for good.
            return self._end_epoch(now.reason)
        if self._retiring_until:
            return self._retire()
        if self.session is None or self.session.lost.is_set():
            if self.conflict is not None and time.monotonic() < self._retry_at:
                return f"not registered: {self.conflict}"
            return await self._start_session()
        trouble = await self._check_keys(self.session)
        if trouble is not None:
            return trouble
        blocked = self.blocked()
        if blocked is not None:
            await self._withdraw()
            self._remind(blocked)
            return f"not a candidate: {blocked}"
        deposed = await self.liveness.depose_stale(self.candidacy, self.view, time.monotonic())
        if deposed is not None:
            return deposed
        await self.liveness.forget(self.view)
        # The orchestrator's health first: a pending request must never keep a leader whose
        # orchestrator is down (issue 21: 55 s behind a request that could not complete).
        aside = await self.orchestrator_policy.decide(self.view, now, self.candidacy is not None)
        if aside is not None:
            return aside
        moved = await self._switchover_rule(now)
        if moved is not None:
            return moved
        preferred = await self._preference_rule(now)
        if preferred is not None:
            return preferred
        if self.config.leader.eligible and self.candidacy is None:
            self.candidacy = await enter_election(self.store, self.keys, self.session, self.node_id)
            if self._restoring_candidate:
                self._restoring_candidate = False
                self._key_restored("candidate", self.candidacy.key, self.candidacy.epoch)
            return f"campaigning with epoch {self.candidacy.epoch}"
        if now.is_leader and not self._claimed:
            self._claimed = True
            log.info(
                "became leader with epoch %s",
                now.epoch,
                extra={"event": "elected", "epoch": now.epoch},
            )
            change = self.last_change
            why = change.why if change is not None else Why("election", "there was no leader")
            self.hooks.fire("elected", epoch=now.epoch, leader=self.node_id, why=why)
        await self._revoke_stale_leases()
        return f"{'leader' if now.is_leader else 'follower'}: {now.reason}"

    async def history(self, *, since: float = 0.0, node: str | None = None) -> list[ClusterEvent]:
        """The cluster history recorded in etcd (decision 0018), read now: oldest first."""
        return await read_history(self.store, self.keys, since=since, node=node)

    # --- switchover (decision 0016) ------------------------------------------------------

    async def request_switchover(
        self, to: str | None, *, reason: str = "switchover", timeout_s: float = REQUEST_S
    ) -> int:
        """Ask the current leader, wherever it runs, to hand over (to `to`, else to the next
        candidate): a request key of ours, fenced by the current epoch. The epoch asked of;
        `SwitchoverRefused` (a sentence) when it cannot happen. `reason` is "switchover", or
        "preferred-leader" when the leader asks for the preferred node (decision 0017).

        A request not done within `timeout_s` is withdrawn (deleted by us), so one that waited
        on a target gone unhealthy cannot move the leadership long after its caller gave up."""
        view, session = self.view, self.session
        leader = view.leader
        if leader is None or view.epoch is None:
            raise SwitchoverRefused("there is no leader to hand over")
        if session is None or session.lost.is_set():
            raise SwitchoverRefused("this node is not registered: it cannot ask")
        if to is not None:
            target = next((c for c in view.electable if c.node_id == to), None)
            if target is None or not orchestrator_ok(view.members.get(to)):
                raise SwitchoverRefused(f"{to} is not a live, eligible, healthy candidate")
            if to == leader.node_id:
                raise SwitchoverRefused(f"{to} leads already (epoch {view.epoch})")
        elif len(view.electable) < 2:
            raise SwitchoverRefused("there is no other candidate to hand over to")
        request = json.dumps(
            {
                "to": to,
                "epoch": view.epoch,
                "by": self.node_id,
                "reason": reason,
                "timeout_s": timeout_s,
            }
        )
        # Before the write: the loop may see the key in the view before the put returns here.
        self._request_deadline = time.monotonic() + timeout_s
        await self.store.put(
            self.keys.switchover(self.node_id), request.encode(), lease=session.lease_id
        )
        self._wake.set()
        return view.epoch

    async def _switchover_rule(self, now: Leadership) -> str | None:
        """Act on a switchover asked for the current epoch (decision 0016): the leader hands
        over, and with a target every candidate older than it queues again behind it."""
        await self._drop_stale_request()
        request, session = self.pending.current(self.view, time.monotonic()), self.session
        if now.is_leader and self._held[0] != now.epoch:
            self._held = (now.epoch, time.monotonic())
        if request is None or self.candidacy is None or session is None:
            return None
        hold = self.config.leader.switchover_hold - (time.monotonic() - self._held[1])
        if now.is_leader and hold > 0:
            return f"leader: a switchover is asked; honoured in {hold:.1f} s (switchover_hold)"
        if request.to is None:
            if not now.is_leader:
                return None
            await self.resign(requested(request))
            return f"handed over: switchover asked by {request.by}"
        target = next((c for c in self.view.electable if c.node_id == request.to), None)
        if target is None or request.to == self.node_id:
            return None
        if self.candidacy.epoch > target.create_revision:
            return None  # behind the target already
        if now.is_leader:
            queue = self.view.electable
            if len(queue) > 1 and queue[1].node_id == request.to:
                await self.resign(requested(request))
                return f"handed over to {request.to}: {request.reason} asked by {request.by}"
            return f"leader: switchover to {request.to} once the candidates ahead of it requeue"
        await self._withdraw()
        self.candidacy = await enter_election(self.store, self.keys, session, self.node_id)
        return f"queued again behind {request.to} (switchover asked by {request.by})"

    async def _preference_rule(self, now: Leadership) -> str | None:
        """As leader, hand over to the preferred leader once it has been ready long enough
        (decision 0017), through a switchover request of our own; once per epoch."""
        target = self.preference.due(self.view, self.node_id)
        epoch = now.epoch
        pending = self.pending.current(self.view, time.monotonic())
        if target is None or not now.is_leader or pending is not None:
            return None
        if epoch is None or self._preference_asked == epoch:
            return None
        try:
            hold = self.config.leader.switchover_hold
            await self.request_switchover(
                target, reason="preferred-leader", timeout_s=REQUEST_S + hold
            )
        except SwitchoverRefused as e:  # it stopped being ready since the view we judged
            return f"leader: not handing over to {target}, the preferred leader: {e}"
        self._preference_asked = epoch
        return f"handing over to {target}, the preferred leader"

    async def _drop_stale_request(self) -> None:
        """Our own request, once its epoch is over (done, or overtaken) or its time is up:
        delete it."""
        ours = self.view.switchovers.get(self.node_id)
        if ours is None or ours.revision == self._dropped:
            return  # none, or its delete sent (the view shows it soon)
        if ours.epoch == self.view.epoch:
            if time.monotonic() < self._request_deadline:
                return  # still current
            target = f" to {ours.to}" if ours.to else ""
            log.warning(
                "switchover%s not done in time; request withdrawn", target,
                extra={"event": "switchover_withdrawn"},
            )  # fmt: skip
        with contextlib.suppress(StoreError):
            await self.store.delete(self.keys.switchover(self.node_id))
            self._dropped = ours.revision

    def _end_epoch(self, reason: str) -> str:
        """We no longer lead: say so, then give up the session, now or once our word runs out.

        A caller may hold our word that we lead for `valid_for_s` more seconds. When we step
        down on our own (view out of sync, blocked) our election key is still the one that
        leads in etcd, and revoking the lease now would let a successor in inside that promise.
        So the session is kept alive (no campaign on it ever again) until the promise has run
        out, then dropped. When etcd has already moved on (our key is gone or replaced, the
        lease is lost) there is nothing to keep: drop it at once.
        """
        ours, session = self.candidacy, self.session
        self._step_down(Why("lost", reason))
        head = self.view.leader
        still_ours = ours is not None and head is not None and head.key == ours.key
        alive = session is not None and not session.lost.is_set()
        if still_ours and alive and self._promised_until > time.monotonic():
            self.candidacy = None
            self._retiring_until = self._promised_until
            return self._retire()
        self._drop_session()
        return f"stepped down ({reason}); starting a new session"

    def _retire(self) -> str:
        owed = self._retiring_until - time.monotonic()
        if owed > 0 and self.session is not None and not self.session.lost.is_set():
            return f"stepped down; keeping our lease {owed:.1f} s more, the validity we gave"
        self._retiring_until = 0.0
        self._drop_session()
        return "stepped down; the validity we gave has run out: starting a new session"

    def _step_down(self, why: Why) -> int | None:
        """Note the end of our leadership: log it and run the demotion hook (if the elected
        hook ran); the epoch given up. Everything here is local: it happens before any
        request to etcd."""
        epoch = self.candidacy.epoch if self.candidacy is not None else self._answered
        claimed, self._claimed, self._answered = self._claimed, False, None
        log.warning(
            "stopped being leader (epoch %s): %s", epoch, why,
            extra={"event": "demoted", "epoch": epoch, "reason": why.code},
        )  # fmt: skip
        if claimed:
            head = self.view.leader if self.stale_for() is None else None  # known, not guessed
            successor = head.node_id if head is not None and head.node_id != self.node_id else None
            self.hooks.fire("demoted", epoch=epoch, leader=successor, why=why)
        return epoch

    def stop_claiming(self, reason: str = "shutting down") -> None:
        """From now on `leadership()` says "not leader", whatever etcd or the clock say.

        Synchronous and local, so a signal handler can call it: the step down is done before
        the event loop serves another request, let alone sends anything to etcd (rule 13).
        """
        if self._leaving is not None:
            return
        if self._claimed or self._answered is not None:
            self._leaving_epoch = self._step_down(Why("shutdown", reason))
        self._leaving = reason

    # --- keeping our keys (rule 12) ------------------------------------------------------

    async def _check_keys(self, session: Session) -> str | None:
        """Make etcd hold our keys as we wrote them; a sentence when something was wrong.

        Judged from the view, only once it has caught up with our last write of the member
        key (an older view may not show it yet).
        """
        view = self.view
        if not view.synced or view.revision < self.member.revision:
            return None
        mine = view.member_keys.get(self.node_id)  # proven or not: the key is what we heal
        if mine is not None and mine.lease != session.lease_id:  # the view has no lease-0 keys
            return await self._held_by_another(mine.lease)
        if self.conflict is not None:
            log.warning("node id %s is free again", self.node_id, extra={"event": "conflict_over"})
            self.conflict = None
        member = self.member
        # Ours: what we last wrote, or what we are writing now (the watch can show a health
        # update before its answer reaches us; that is no stranger's overwrite).
        if mine is not None and mine.lease == session.lease_id and mine.record in member.ours:
            return await self._check_candidate()
        unleased = self.node_id in view.unleased
        what = "on no lease" if unleased else "deleted" if mine is None else "overwritten"
        revision = await member.restore(
            session,
            held_by=0 if mine is None else session.lease_id,
            # the candidacy ends with the old record, in the same transaction
            also=[Delete(self.candidacy.key)] if self.candidacy is not None else [],
        )
        if revision is None:
            return "our member key changed while being restored; looking again"
        self.candidacy = None
        self._key_restored("member", member.key, revision, was=what)
        return f"restored our member key ({what})"

    async def _check_candidate(self) -> str | None:
        ours = self.candidacy
        if ours is None or self.view.revision < ours.epoch:
            return None
        deposal = next((d for d in self.view.deposals.values() if d.epoch == ours.epoch), None)
        if deposal is not None:
            log.warning(
                "our candidacy (epoch %d) was deposed by %s: we did not prove we were alive "
                "in time; campaigning again",
                ours.epoch, deposal.by,
                extra={"event": "candidate_deposed", "by": deposal.by},
            )  # fmt: skip
            await self._withdraw()
            return f"our candidacy was deposed by {deposal.by}; campaigning again"
        for c in self.view.candidates:
            if (c.key, c.lease, c.create_revision, c.node_id) == (
                ours.key, ours.lease, ours.epoch, self.node_id
            ):  # fmt: skip
                return None
        log.warning(
            "our candidate key %s was deleted or replaced; campaigning again",
            ours.key,
            extra={"event": "candidate_lost"},
        )
        await self._withdraw()
        self._restoring_candidate = True
        return "our candidate key was gone; campaigning again"

    async def _held_by_another(self, lease: int) -> str:
        """Another live lease holds our node id: never overwrite it (rule 6), stand aside."""
        reason = self._stand_aside(f"{lease:x}")
        await self._withdraw()
        return reason

    def _stand_aside(self, holder: str) -> str:
        """Note that another live lease (`holder` says which) holds our node id: logged once,
        then the loop reminds now and then; `blocked()` and `/ready` give the reason."""
        reason = f"node id {self.node_id} is held by another live lease ({holder})"
        if self.conflict is None:
            self._reminded_at = time.monotonic()
            log.error(
                "%s: two machines use one node id; standing aside until it is free",
                reason,
                extra={"event": "duplicate_node"},
            )
        self.conflict = reason
        return reason

    async def _withdraw(self) -> None:
        """End our candidacy: delete our candidate key if it is still the one we made."""
        ours, self.candidacy = self.candidacy, None
        if ours is not None:
            with contextlib.suppress(StoreError):
                await self.store.txn([Compare.lease_is(ours.key, ours.lease)], [Delete(ours.key)])

    def _key_restored(self, what: str, key: str, revision: int, was: str = "deleted") -> None:
        log.warning(
            "our %s key %s was %s; written again", what, key, was,
            extra={"event": "key_restored", "what": what},
        )  # fmt: skip
        self._record(ClusterEvent("key_restored", revision, {"what": what, "key": key}))

    def _remind(self, problem: str) -> None:
        """Log a standing problem now and then (at most once a minute), not every cycle."""
        if time.monotonic() - self._reminded_at >= REMINDER_S:
            self._reminded_at = time.monotonic()
            log.error("still not acting as leader: %s", problem, extra={"event": "blocked"})

    async def _start_session(self) -> str:
        """Rule 1: new lease, member key, keepalives.

        At start-up a node id held by another live lease stops us (`DuplicateNode`, rule 6).
        Once we have run, it does not: another machine took our id while we were registered
        (or someone put a record on a lease of their own), and exiting would hand it the
        node. We stand aside, say so (not ready, no candidacy), and try again every keepalive
        period until the key is free.
        """
        if self.session is not None:
            self._drop_session()
        owed = self._inherited_until - time.monotonic()
        if owed > 0:
            return (
                f"not registering for {owed:.1f} s more: the previous process on this node "
                "promised leadership until then, and its lease must outlive that promise"
            )
        await self._revoke_stale_leases()
        session = await Session.open(
            self.store,
            self.config.lease_ttl,
            on_keepalive=self._keepalive_done,
            declared_ttl=self.member.record.proof_ttl or None,
            prove=lambda session: self.liveness.prove(session, self.candidacy, self.view),
        )
        try:
            await self.member.register(
                session, previous_instances=(self.member.record.instance, self.previous_instance)
            )
        except DuplicateNode as e:
            await session.revoke()
            if self.member.written is None:
                raise  # never registered in this process: refuse to start
            self._retry_at = time.monotonic() + session.lease.ttl / 3
            return f"not registered: {self._stand_aside(e.who)}"
        except BaseException:
            await session.revoke()
            raise
        self.conflict = None
        self.session = session
        self._keepalive_task = asyncio.create_task(self._keep(session), name="keepalive")
        log.info(
            "registered %s with lease %x (ttl %d s)",
            self.node_id,
            session.lease_id,
            session.lease.ttl,
            extra={"event": "registered", "lease": f"{session.lease_id:x}"},
        )
        return f"registered with lease {session.lease_id:x}"

    def listen_keepalives(self, listener: Callable[[float], None]) -> None:
        """Call `listener(latency_s)` after every successful keepalive from now on, of the
        current session and every later one (metrics observe the latency this way)."""
        self._keepalive_listeners.append(listener)

    def _keepalive_done(self, latency_s: float) -> None:
        """A keepalive went through the etcd leader: the view is confirmed as of its sending."""
        self._confirm(time.monotonic() - latency_s)
        for listener in self._keepalive_listeners:
            listener(latency_s)

    def _confirm(self, at: float) -> None:
        if self._confirmed_at is None or at > self._confirmed_at:
            self._confirmed_at = at

    async def _keep(self, session: Session) -> None:
        await session.run_keepalives()
        self._wake.set()  # the session is lost: the loop starts a new one at once

    def _drop_session(self) -> None:
        """Forget the session and its campaign; its lease is revoked when etcd answers."""
        if self.session is not None:
            self.session.lost.set()
            self._stale_leases.append(self.session.lease_id)
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        self.session, self.candidacy, self._answered = None, None, None

    async def _revoke_stale_leases(self) -> None:
        """Revoke leases of dropped sessions, so their election keys stop blocking others."""
        while self._stale_leases:
            with contextlib.suppress(LeaseNotFound):
                await self.store.lease_revoke(self._stale_leases[0])
            self._stale_leases.pop(0)

    async def resign(self, why: Why = RESIGNED) -> bool:
        """Hand leadership over now: delete our election key so the next candidate leads at
        once, then campaign again at the back of the queue (a new key: a new, higher epoch).

        If the key cannot be deleted, the whole session is dropped instead, so the old epoch
        can never be picked up again by re-campaigning on the same lease.
        """
        ours = self.candidacy
        if ours is None or not self.leadership().is_leader:
            return False
        self._step_down(why)  # nothing says leader from here on: campaign is None
        self.candidacy = None
        self._promised_until = 0.0  # the caller asked to hand over: the promise is released
        try:
            deleted = await release(self.store, ours)
        except StoreError:
            deleted = False
        if not deleted:
            self._drop_session()
        self._wake.set()
        return True

    async def _leave(self) -> None:
        """Shutdown, after `stop_claiming`: revoke our leases so our keys vanish at once and
        the next candidate leads. Bounded as a whole by `SHUTDOWN_BUDGET_S`, every endpoint
        and retry included, so SIGTERM ends the process in time even when etcd is silent."""
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        session = self.session
        leases = [*self._stale_leases, *([session.lease_id] if session is not None else [])]
        if session is not None:
            session.lost.set()
        if not leases:
            self.farewell = "no lease held"
            return
        revoked = False
        with within(SHUTDOWN_BUDGET_S), contextlib.suppress(asyncio.TimeoutError):
            async with timeout(SHUTDOWN_BUDGET_S + 0.25):  # a backstop only
                if session is not None:
                    await self._say_leaving(session)
                answers = await asyncio.gather(
                    *(self.store.lease_revoke(lease) for lease in leases), return_exceptions=True
                )
                revoked = all(a is None or isinstance(a, LeaseNotFound) for a in answers)
        lease = f"lease {leases[-1]:x}"
        if revoked:
            self.farewell = f"{lease} revoked"
            if self.promises is not None:
                self.promises.forget()  # our keys are gone: a successor leads already
        else:
            ttl = session.lease.ttl if session is not None else self.config.lease_ttl
            self.farewell = (
                f"{lease} not revoked (etcd did not answer within {SHUTDOWN_BUDGET_S:g} s); "
                f"it expires within {ttl} s"
            )
        if self._leaving_epoch is not None:
            self.farewell = f"leadership (epoch {self._leaving_epoch}) handed over; {self.farewell}"

    async def _say_leaving(self, session: Session) -> None:
        """Mark our member record as leaving before the lease goes, so every node can tell
        this stop from a crash (decision 0017's reasons), and end our candidacy in the same
        transaction: the next candidate leads from this first round trip on, however long
        the revoke then takes. Best effort, and bounded: a silent etcd must leave the revoke
        the rest of the shutdown budget."""
        ours = self.candidacy
        also = [Delete(ours.key)] if ours is not None and ours.lease == session.lease_id else []
        with contextlib.suppress(StoreError, asyncio.TimeoutError):
            async with timeout(LEAVING_NOTICE_S):
                await self.member.say_leaving(session, self._leaving or "stopped", also)

    # --- what the background tasks tell us (the view keeper's and the quorum monitor's) ---

    def view_changed(self, old: ClusterView, new: ClusterView) -> None:
        self.liveness.observe(new, time.monotonic())
        for event in view_changes(old, new):
            self._record(event)
            if event.kind == "leader_changed":  # its reason is sidecar.handover's, once
                self.last_change = LeaderChange.of(event)
        self._wake.set()

    def view_loaded(self, sent: float) -> None:
        """A full load is a linearizable read: it confirms the view as of its sending. Watch
        batches do not count: a stream that resumes on a member cut off from its peers can
        still replay history it had, which says nothing about now."""
        self._confirm(sent)

    def header_seen(self, header: Header) -> None:
        """Every header of a linearizable read or watch batch: the history check (rule 7)."""
        before = self.guard.violation
        reason = self.guard.observe(header)
        if reason is not None and before is None:  # once; the loop reminds now and then
            self._reminded_at = time.monotonic()
            log.error(
                "%s: not acting as leader; withdrawing our candidacy",
                reason,
                extra={"event": "history_violation"},
            )
            self._wake.set()

    def _quorum_changed(self, old: QuorumHealth, new: QuorumHealth) -> None:
        for event in self._quorum_changes(old, new, self.view.revision):
            self._record(event)
        self._wake.set()

    def _record(self, event: ClusterEvent) -> None:
        self.events.add(event)
        log.info(event.sentence(), extra={"event": event.kind, **event.detail})


async def _cancel_and_wait(*tasks: asyncio.Task[object]) -> None:
    """Cancel `tasks` until every one has ended. One cancel is not always enough on Python
    3.11: `asyncio.wait_for` drops a cancel that arrives as its inner await completes
    (CPython gh-86296), and the task then runs on as if never cancelled."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.2)
    await asyncio.gather(*tasks, return_exceptions=True)
