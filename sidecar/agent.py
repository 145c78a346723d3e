"""The sidecar: session, membership, election, view and health wired into one control loop.

Background tasks keep the parts current (keepalives, the cluster watch, quorum checks); the
control loop decides. Each cycle ends in one sentence (logged at debug, shown by status) and an
unexpected exception at the loop top is logged with its traceback and the loop carries on.

The loop's rules, in order:
1. no live session -> revoke the old lease if any (best effort), open a new one, register the
   member key (a duplicate node id stops the sidecar), then campaign if eligible;
2. leadership is recomputed at every read (`Agent.leadership()`), never cached; the loop only
   notices transitions to fire the role hooks and log them;
3. leadership held and then lost, for any reason -> that epoch is dead: drop the session and
   start over with a new lease (safety rule 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from sidecar.election import (
    Campaign,
    Leadership,
    campaign,
    fenced_txn,
    leadership,
    resign,
)
from sidecar.events import ClusterEvent, EventLog, diff_views
from sidecar.history import HistoryGuard
from sidecar.hooks import RoleHooks
from sidecar.keys import Keys
from sidecar.membership import DuplicateNode, MemberRecord, register, update_record
from sidecar.orchestrator import OrchestratorHealth, OrchestratorWatch
from sidecar.quorum import QuorumHealth, QuorumMonitor
from sidecar.session import Session
from sidecar.settings import RingsideConfig
from sidecar.store.base import Store
from sidecar.store.errors import LeaseNotFound, StoreError
from sidecar.store.model import Header, TxnOp
from sidecar.view import ClusterView, ViewKeeper

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET_S = 1.5  # resign + revoke at SIGTERM; the process must be gone within 2 s
SHUTDOWN_HOOK_GRACE_S = 0.3  # then hooks still running are left to finish on their own
TICK_S = 0.1  # how often the loop looks at the validity clock between other wake-ups


class Agent:
    """One node's sidecar. `run()` until `stop` is set; read state with `leadership()` and
    `view`; `resign()` hands leadership over."""

    def __init__(
        self,
        config: RingsideConfig,
        node_id: str,
        store: Store,
        record: MemberRecord,
        *,
        quorum_interval_s: float = 2.0,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.store = store
        self.record = record
        self.keys = Keys(config.cluster)
        self.events = EventLog()
        self.guard = HistoryGuard()
        self.hooks = RoleHooks(
            config.leader.on_elected,
            config.leader.on_demoted,
            config.leader.hook_timeout,
            node_id,
        )
        self.keeper = ViewKeeper(
            store, self.keys, on_change=self._view_changed, on_header=self._observe_header
        )
        self.quorum = QuorumMonitor(store, interval_s=quorum_interval_s)
        self.quorum.on_change = self._quorum_changed
        checks = config.orchestrator
        self.orchestrator = (
            OrchestratorWatch(
                checks.health_url,
                interval_s=checks.check_interval,
                failures_before_unhealthy=checks.failures_before_unhealthy,
                publish=self._publish_orchestrator,
            )
            if checks.health_url
            else None
        )
        self.session: Session | None = None
        self.campaign: Campaign | None = None
        self.last_cycle = "starting"
        self.on_keepalive: Callable[[float], None] = lambda latency_s: None
        self._claimed = False
        self._wake = asyncio.Event()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._stale_leases: list[int] = []
        self._quorum_lost = False
        self._written: MemberRecord | None = None  # what our member key holds, as we wrote it

    # --- reading -------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """Our member key is in etcd: a session exists only once it has registered."""
        return self.session is not None

    @property
    def view(self) -> ClusterView:
        return self.keeper.current

    @property
    def health(self) -> QuorumHealth:
        return self.quorum.current

    def blocked(self) -> str | None:
        """A reason this node must not lead whatever the election says (rule 7).

        Quorum loss (rule 8) needs no rule of its own here: without quorum no keepalive
        succeeds, so the validity clock runs out within TTL - margin. The quorum check is
        reported, not obeyed, so one slow status probe cannot depose a healthy leader.
        """
        return self.guard.violation

    def leadership(self) -> Leadership:
        """Whether we lead, decided now from the view, our campaign and the validity clock."""
        return leadership(
            self.view,
            self.campaign,
            self.session,
            margin_s=self.config.leader.validity_margin,
            blocked=self.blocked(),
        )

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
        control = asyncio.create_task(self._control_loop(), name="control")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({control, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if control.done():
                control.result()
        finally:
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
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S):
                    await self._wake.wait()

    async def _cycle(self) -> str:
        now = self.leadership()
        if self._claimed and not now.is_leader:
            # Rule 5, checked before anything else: this epoch is over for good.
            self._step_down(now.reason, now)
            self._drop_session()
            return f"stepped down ({now.reason}); starting a new session"
        if self.session is None or self.session.lost.is_set():
            return await self._start_session()
        if self.config.leader.eligible and self.campaign is None:
            self.campaign = await campaign(self.store, self.keys, self.session, self.node_id)
            return f"campaigning with epoch {self.campaign.epoch}"
        if now.is_leader and not self._claimed:
            self._claimed = True
            log.info(
                "became leader with epoch %s",
                now.epoch,
                extra={"event": "elected", "epoch": now.epoch},
            )
            self.hooks.fire("elected", epoch=now.epoch, leader=self.node_id)
        await self._revoke_stale_leases()
        return f"{'leader' if now.is_leader else 'follower'}: {now.reason}"

    def _step_down(self, reason: str, now: Leadership | None = None) -> None:
        """Note the end of our leadership: log it and run the demotion hook."""
        self._claimed = False
        epoch = self.campaign.epoch if self.campaign else None
        log.warning(
            "stopped being leader (epoch %s): %s", epoch, reason,
            extra={"event": "demoted", "epoch": epoch},
        )  # fmt: skip
        self.hooks.fire(
            "demoted", epoch=now.epoch if now else None, leader=now.leader if now else None
        )

    async def _start_session(self) -> str:
        """Rule 1: new lease, member key, keepalives. `DuplicateNode` propagates and stops us."""
        if self.session is not None:
            self._drop_session()
        await self._revoke_stale_leases()
        session = await Session.open(self.store, self.config.lease_ttl)
        session.on_keepalive = self._keepalive_done
        record = self.record
        try:
            await register(self.store, self.keys, record, session)
        except BaseException:
            await session.revoke()
            raise
        self._written = record
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

    def _keepalive_done(self, latency_s: float) -> None:
        """Looks `on_keepalive` up at each call, so a callback set later (metrics) is used by
        the session already running too."""
        self.on_keepalive(latency_s)

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
        self.session, self.campaign = None, None

    async def _revoke_stale_leases(self) -> None:
        """Revoke leases of dropped sessions, so their election keys stop blocking others."""
        while self._stale_leases:
            with contextlib.suppress(LeaseNotFound):
                await self.store.lease_revoke(self._stale_leases[0])
            self._stale_leases.pop(0)

    async def resign(self) -> bool:
        """Hand leadership over now: delete our election key so the next candidate leads at
        once, then campaign again at the back of the queue (a new key: a new, higher epoch).

        If the key cannot be deleted, the whole session is dropped instead, so the old epoch
        can never be picked up again by re-campaigning on the same lease.
        """
        ours = self.campaign
        if ours is None or not self._claimed or not self.leadership().is_leader:
            return False
        self._step_down("resigned")
        self.campaign = None
        try:
            deleted = await resign(self.store, ours)
        except StoreError:
            deleted = False
        if not deleted:
            self._drop_session()
        self._wake.set()
        return True

    async def fenced(self, ops: Sequence[TxnOp]) -> bool:
        """Apply a leader-only write, fenced by our epoch; False when we do not lead."""
        ours = self.campaign
        if ours is None or not self.leadership().is_leader:
            return False
        return await fenced_txn(self.store, ours, ops)

    async def _leave(self) -> None:
        """Shutdown: resign if leading, revoke the lease; bounded so SIGTERM exits in time."""
        with contextlib.suppress(TimeoutError, StoreError):
            async with asyncio.timeout(SHUTDOWN_BUDGET_S):
                if self.campaign is not None and self._claimed:
                    self._step_down("shutting down")
                    await resign(self.store, self.campaign)
                if self.session is not None:
                    await self.session.revoke()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()

    # --- callbacks from the background tasks ---------------------------------------------

    async def _publish_orchestrator(self, health: OrchestratorHealth) -> bool:
        """Put the orchestrator's new state into our record; True once etcd has it. While we
        are not registered, False: a registration running now may have written the old record,
        so the watch offers it again after the next probe."""
        self.record = record = self.record.model_copy(update={"orchestrator": health})
        session = self.session
        if session is None:
            return False
        if self._written == record:
            return True  # the registration already wrote it
        try:
            written = await update_record(self.store, self.keys, record, session)
        except StoreError as e:
            log.warning("orchestrator health not published yet: %s", e)
            return False
        if written:
            self._written = record
        return written

    def _view_changed(self, old: ClusterView, new: ClusterView) -> None:
        for event in diff_views(old, new):
            self._record(event)
        self._wake.set()

    def _observe_header(self, header: Header) -> None:
        reason = self.guard.observe(header)
        if reason:
            log.error("%s: not acting as leader", reason, extra={"event": "history_violation"})
            self._wake.set()

    def _quorum_changed(self, old: QuorumHealth, new: QuorumHealth) -> None:
        if old.quorum_ok and not new.quorum_ok:
            self._quorum_lost = True
            self._record(ClusterEvent("quorum_lost", self.view.revision, {"reason": new.error}))
        elif new.quorum_ok and self._quorum_lost:
            self._quorum_lost = False
            self._record(ClusterEvent("quorum_regained", self.view.revision, {}))
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
