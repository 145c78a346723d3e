"""Role-change hooks: the commands ringside runs when this node becomes or stops being leader.

The orchestrator starts its leader-only daemons from ``on_elected`` and stops them from
``on_demoted``. The sidecar's own loops (keepalives above all) must never wait for a hook: a
keepalive held up behind a slow shell command could cost the lease, and with it the leadership
the hook was announcing. So `RoleHooks.fire` only queues the event and returns; one worker task
runs the queued hooks one at a time, in the order they were fired, so a "demoted" can never
overtake the "elected" before it.

Each hook runs through the shell in its own session (process group) with the parent's
environment plus these six, always all set (an unknown value is the empty string):

- ``RINGSIDE_EVENT``: ``elected`` or ``demoted``;
- ``RINGSIDE_NODE_ID``: this node's id;
- ``RINGSIDE_EPOCH``: the epoch this node won (elected), or held and gave up (demoted);
- ``RINGSIDE_LEADER``: elected, this node's id; demoted, the node that leads now when it is
  known and is not this node, else empty;
- ``RINGSIDE_REASON``: why leadership moved, one code of `sidecar.handover` (``election``,
  ``crash``, ``resign``, ``switchover``, ``orchestrator-unhealthy``, ``preferred-leader``,
  ``shutdown``, ``lost``), for a hook to act on;
- ``RINGSIDE_REASON_DETAIL``: the same as one sentence, for a person ("switchover to
  hetzner-cpu2 asked by vultr-a1", "no answer from an etcd quorum for 8.1 s").

The leader's name comes from etcd, which is untrusted (design rule 14): anything but a valid
node id (`sidecar.settings.DNS_LABEL`) is logged and passed on as empty, so a hook can use the
value as it is (unquoted, in a path, in a command line). The detail loses its control characters
(NUL and newlines included) and is cut to `REASON_MAX_CHARS`. A hook that cannot even start (no
shell, a NUL byte in the command) is logged and recorded as a `HookResult` with no exit code: a
hook never stops ringside.

A hook that runs past the timeout is killed with its whole process group. A hook counts as
finished when its shell exits, not when its stderr closes: a hook that leaves a daemon running
in the background is the normal case here, and that daemon may keep the inherited stderr open
for as long as it lives. Its stdout is discarded; its stderr is read so the last line can be
logged when it fails.

Example::

    hooks = RoleHooks("systemctl start trainer", "systemctl stop trainer", 30.0, "hetzner-cpu1")
    hooks.fire("elected", epoch=42, leader="hetzner-cpu1")   # returns at once
    hooks.fire("demoted", epoch=42, leader="hetzner-cpu2", why=Why("resign", "resigned"))
    ...
    hooks.last_results[0]    # HookResult(event='elected', ..., exit_code=0, timed_out=False, ...)
    await hooks.close()      # waits up to 30 s for queued hooks, then cancels them
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from sidecar.handover import Why
from sidecar.settings import DNS_LABEL

log = logging.getLogger(__name__)

RoleEvent = Literal["elected", "demoted"]

RESULTS_KEPT: Final = 16
REASON_MAX_CHARS: Final = 200
_SHOWN_NAME_CHARS: Final = 64  # of a rejected leader name, in the warning
_STDERR_TAIL_BYTES: Final = 4096
_STDERR_LINE_CHARS: Final = 300
# After SIGKILL a process dies at once unless it is stuck in the kernel; do not wait forever.
_REAP_AFTER_KILL_S: Final = 2.0


@dataclass(frozen=True)
class HookResult:
    """How one hook run ended; `exit_code` is None when it was killed or could not start."""

    event: RoleEvent
    command: str
    exit_code: int | None
    timed_out: bool
    duration_s: float


@dataclass(frozen=True)
class _Job:
    event: RoleEvent
    command: str
    env: dict[str, str]


class RoleHooks:
    """Runs the configured command for each role change, one at a time, never blocking the caller.

    A hook that is not configured (None or empty) makes `fire` a no-op for that event.
    """

    def __init__(
        self, on_elected: str | None, on_demoted: str | None, timeout_s: float, node_id: str
    ) -> None:
        self._commands: dict[RoleEvent, str | None] = {
            "elected": on_elected,
            "demoted": on_demoted,
        }
        self._timeout_s = timeout_s
        self._node_id = node_id
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._detach = False
        # Stderr pipes still held open by something a hook left running; read until they close.
        self._lingering: set[_StderrTail] = set()
        self.last_results: deque[HookResult] = deque(maxlen=RESULTS_KEPT)

    def fire(
        self, event: RoleEvent, *, epoch: int | None, leader: str | None, why: Why | None = None
    ) -> None:
        """Queue the hook for `event` and return at once; must be called on the running loop.

        `epoch` is the epoch won (elected) or given up (demoted). `leader` matters only for
        demoted: the node leading now, as read from etcd (checked here, untrusted); for elected
        the leader is this node. `why` is the reason (its detail is sanitized here).
        """
        command = self._commands[event]
        if not command:
            return
        if self._closed:
            log.warning("hook %s not run: hooks are shut down", event)
            return
        if event == "elected":
            leader_now = self._node_id
        else:
            leader_now = _checked_leader(event, leader)
            if leader_now == self._node_id:
                leader_now = ""  # a stale view: this node no longer leads whatever it says
        env = {
            **os.environ,
            "RINGSIDE_EVENT": event,
            "RINGSIDE_NODE_ID": self._node_id,
            "RINGSIDE_EPOCH": "" if epoch is None else str(epoch),
            "RINGSIDE_LEADER": leader_now,
            "RINGSIDE_REASON": why.code if why is not None else "",
            "RINGSIDE_REASON_DETAIL": _one_line(why.detail) if why is not None else "",
        }
        self._queue.put_nowait(_Job(event, command, env))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name="ringside-hooks"
            )

    async def close(self, grace_s: float | None = None, *, detach: bool = False) -> None:
        """Wait for queued hooks (up to `grace_s`, default the hook timeout), then cancel
        what is left: killed, or with `detach` left running on its own.

        The sidecar detaches at shutdown: it must exit within 2 s, and killing an `on_demoted`
        hook half-way could leave the orchestrator's leader-only daemons running.
        """
        self._closed = True
        self._detach = detach
        wait_s = self._timeout_s if grace_s is None else min(grace_s, self._timeout_s)
        worker = self._worker
        if worker is not None and not worker.done():
            try:
                await asyncio.wait_for(self._queue.join(), wait_s)
            except asyncio.TimeoutError:
                log.warning(
                    "role hooks still running after %.1f s at shutdown; %s",
                    wait_s,
                    "leaving them to finish on their own" if detach else "killing them",
                )
            worker.cancel()
            await asyncio.wait([worker])
        for tail in list(self._lingering):
            tail.close()
        self._lingering.clear()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                self.last_results.append(await self._run(job))
            except Exception:
                log.exception("role hook %s crashed in ringside; carrying on", job.event)
            finally:
                self._queue.task_done()

    async def _run(self, job: _Job) -> HookResult:
        started = time.monotonic()
        tail = _StderrTail(asyncio.get_running_loop())
        try:
            proc = await asyncio.create_subprocess_shell(
                job.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=tail.write_fd,
                env=job.env,
                start_new_session=True,
            )
        except Exception as e:  # OSError, or ValueError for a NUL byte in command or env
            tail.close()
            log.error(
                "role hook %s could not start: %s: %s (%r)",
                job.event,
                type(e).__name__,
                e,
                job.command,
                extra={"event": "hook_failed", "role_event": job.event, "exit_code": None},
            )
            return HookResult(job.event, job.command, None, False, time.monotonic() - started)
        except BaseException:
            tail.close()
            raise
        finally:
            tail.close_write_end()

        exit_code: int | None = None
        timed_out = False
        try:
            exit_code = await asyncio.wait_for(proc.wait(), self._timeout_s)
        except asyncio.TimeoutError:
            timed_out = True
            await _kill_group(proc)
        except asyncio.CancelledError:
            if not self._detach:
                await _kill_group(proc)
            tail.close()
            raise
        duration_s = time.monotonic() - started

        tail.read_available()
        if tail.at_eof:
            tail.close()
        else:
            self._lingering.add(tail)
            tail.call_at_eof(self._lingering.discard)

        result = HookResult(job.event, job.command, exit_code, timed_out, duration_s)
        _log_result(result, tail.last_line())
        return result


def _checked_leader(event: RoleEvent, leader: str | None) -> str:
    """`leader` when it is a valid node id, else "" (design rule 14: a name read from etcd
    reaches a hook's environment only once it is known to be a plain DNS label)."""
    if not leader:
        return ""
    if DNS_LABEL.fullmatch(leader):
        return leader
    shown = repr(leader[:_SHOWN_NAME_CHARS]) + ("..." if len(leader) > _SHOWN_NAME_CHARS else "")
    log.warning(
        "role hook %s: leader %s is not a valid node id; RINGSIDE_LEADER left empty",
        event,
        shown,
        extra={"event": "hook_bad_leader", "role_event": event},
    )
    return ""


def _one_line(text: str) -> str:
    """`text` without control characters (NUL, newlines, escapes) or lone surrogates (which
    no environment can hold), at most `REASON_MAX_CHARS` long."""
    kept = "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cs"))
    return kept.strip()[:REASON_MAX_CHARS]


def _log_result(result: HookResult, stderr_last_line: str) -> None:
    """One line per run; the `extra` fields let JSON logs select hook outcomes without parsing."""
    said = f": {stderr_last_line}" if stderr_last_line else ""
    fields = {
        "role_event": result.event,
        "exit_code": result.exit_code,
        "duration_s": round(result.duration_s, 3),
    }
    if result.timed_out:
        log.error(
            "role hook %s timed out after %.1f s and was killed (%s)%s",
            result.event,
            result.duration_s,
            result.command,
            said,
            extra={"event": "hook_timed_out", **fields},
        )
    elif result.exit_code != 0:
        log.error(
            "role hook %s failed with exit code %s after %.2f s (%s)%s",
            result.event,
            result.exit_code,
            result.duration_s,
            result.command,
            said,
            extra={"event": "hook_failed", **fields},
        )
    else:
        log.info(
            "role hook %s ran in %.2f s (%s)",
            result.event,
            result.duration_s,
            result.command,
            extra={"event": "hook_ran", **fields},
        )


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the hook's whole process group (it leads its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        await asyncio.wait_for(proc.wait(), _REAP_AFTER_KILL_S)
    except asyncio.TimeoutError:
        log.error("role hook process %d did not die after SIGKILL", proc.pid)


class _StderrTail:
    """The last few KiB a hook wrote to stderr, read by the event loop as it arrives.

    A plain pipe rather than asyncio's PIPE: asyncio's `Process.wait()` also waits for its pipes
    to close, which a daemon started by the hook may never do.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._read_fd, self.write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self._tail = bytearray()
        self._write_open = True
        self._reading = True
        self.at_eof = False
        self._on_eof: Callable[[_StderrTail], None] | None = None
        loop.add_reader(self._read_fd, self.read_available)

    def call_at_eof(self, callback: Callable[[_StderrTail], None]) -> None:
        """Call `callback(self)` once the last writer has closed the pipe."""
        self._on_eof = callback

    def read_available(self) -> None:
        """Read whatever is in the pipe now, without waiting."""
        while self._reading:
            try:
                chunk = os.read(self._read_fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.at_eof = True
                self.close()
                if self._on_eof is not None:
                    self._on_eof(self)
                return
            self._tail += chunk
            del self._tail[:-_STDERR_TAIL_BYTES]

    def last_line(self) -> str:
        lines = self._tail.decode(errors="replace").splitlines()
        for line in reversed(lines):
            if line.strip():
                return line.strip()[:_STDERR_LINE_CHARS]
        return ""

    def close_write_end(self) -> None:
        if self._write_open:
            self._write_open = False
            os.close(self.write_fd)

    def close(self) -> None:
        self.close_write_end()
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
