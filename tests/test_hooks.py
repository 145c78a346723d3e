"""Role-change hooks run real shell commands, one at a time, without ever stalling the loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shlex
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sidecar.handover import Why
from sidecar.hooks import HookResult, RoleEvent, RoleHooks
from tests.waiting import wait_for


async def results(hooks: RoleHooks, count: int, within_s: float = 5.0) -> list[HookResult]:
    async def enough() -> bool:
        return len(hooks.last_results) >= count

    await wait_for(enough, within_s)
    return list(hooks.last_results)


def read_lines(path: Path) -> list[str]:
    """The file's lines, none if it does not exist yet (tiny files: reading them never blocks)."""
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


async def file_lines(path: Path, count: int, within_s: float = 5.0) -> list[str]:
    async def enough() -> bool:
        return len(read_lines(path)) >= count

    await wait_for(enough, within_s)
    return read_lines(path)


def gone_or_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}


@asynccontextmanager
async def role_hooks(
    on_elected: str | None, on_demoted: str | None = None, timeout_s: float = 5.0
) -> AsyncIterator[RoleHooks]:
    hooks = RoleHooks(on_elected, on_demoted, timeout_s, node_id="hetzner-cpu1")
    try:
        yield hooks
    finally:
        await hooks.close()


async def test_the_command_sees_the_event_in_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RINGSIDE_TEST_PARENT_VAR", "inherited")
    out = tmp_path / "env"
    dump_env = f"env > {out}.tmp && mv {out}.tmp {out}"
    async with role_hooks(dump_env) as hooks:
        hooks.fire("elected", epoch=42, leader="hetzner-cpu1")
        await file_lines(out, 1)

    env = dict(line.partition("=")[::2] for line in read_lines(out))
    assert env["RINGSIDE_EVENT"] == "elected"
    assert env["RINGSIDE_EPOCH"] == "42"
    assert env["RINGSIDE_LEADER"] == "hetzner-cpu1"
    assert env["RINGSIDE_NODE_ID"] == "hetzner-cpu1"
    assert env["RINGSIDE_TEST_PARENT_VAR"] == "inherited"


HOOK_VARIABLES = (
    "RINGSIDE_EVENT",
    "RINGSIDE_NODE_ID",
    "RINGSIDE_EPOCH",
    "RINGSIDE_LEADER",
    "RINGSIDE_REASON",
    "RINGSIDE_REASON_DETAIL",
)


async def hook_environment(
    tmp_path: Path,
    event: RoleEvent,
    *,
    epoch: int | None,
    leader: str | None,
    why: Why | None = None,
) -> dict[str, str]:
    """The `RINGSIDE_*` variables the hook for `event` sees when fired with these values."""
    out = tmp_path / f"{event}.env"
    dump_env = f"env > {out}.tmp && mv {out}.tmp {out}"
    async with role_hooks(dump_env, dump_env) as hooks:
        if why is None:
            hooks.fire(event, epoch=epoch, leader=leader)
        else:
            hooks.fire(event, epoch=epoch, leader=leader, why=why)
        await file_lines(out, 1)
    env = dict(line.partition("=")[::2] for line in read_lines(out))
    return {name: env[name] for name in HOOK_VARIABLES if name in env}


async def test_elected_names_this_node_as_leader_with_the_epoch_won(tmp_path: Path) -> None:
    env = await hook_environment(tmp_path, "elected", epoch=42, leader="hetzner-cpu1")
    assert env == {
        "RINGSIDE_EVENT": "elected",
        "RINGSIDE_NODE_ID": "hetzner-cpu1",
        "RINGSIDE_EPOCH": "42",
        "RINGSIDE_LEADER": "hetzner-cpu1",
        "RINGSIDE_REASON": "",
        "RINGSIDE_REASON_DETAIL": "",
    }


async def test_elected_passes_the_reason_as_a_code_and_a_sentence(tmp_path: Path) -> None:
    why = Why("switchover", "switchover to hetzner-cpu1 asked by vultr-a1")
    env = await hook_environment(tmp_path, "elected", epoch=43, leader="hetzner-cpu1", why=why)
    assert (env["RINGSIDE_LEADER"], env["RINGSIDE_REASON"], env["RINGSIDE_REASON_DETAIL"]) == (
        "hetzner-cpu1",
        "switchover",
        "switchover to hetzner-cpu1 asked by vultr-a1",
    )


async def test_demoted_names_the_epoch_given_up_the_new_leader_and_why(tmp_path: Path) -> None:
    env = await hook_environment(
        tmp_path, "demoted", epoch=42, leader="hetzner-cpu2", why=Why("resign", "resigned")
    )
    assert env == {
        "RINGSIDE_EVENT": "demoted",
        "RINGSIDE_NODE_ID": "hetzner-cpu1",
        "RINGSIDE_EPOCH": "42",
        "RINGSIDE_LEADER": "hetzner-cpu2",
        "RINGSIDE_REASON": "resign",
        "RINGSIDE_REASON_DETAIL": "resigned",
    }


async def test_demoted_never_names_this_node_as_the_leader(tmp_path: Path) -> None:
    """A view not yet updated may still show this node leading: it does not, it just stepped
    down."""
    why = Why("lost", "lease validity ran out")
    env = await hook_environment(tmp_path, "demoted", epoch=42, leader="hetzner-cpu1", why=why)
    assert (env["RINGSIDE_LEADER"], env["RINGSIDE_REASON"]) == ("", "lost")


@pytest.mark.parametrize(
    "leader",
    [
        "hetzner\x00cpu2",
        "$(touch /tmp/ringside-pwned)",
        "hetzner-cpu2; rm -rf ~",
        "`id`",
        "hetzner-cpu2\nRINGSIDE_EPOCH=999",
        "Hetzner-CPU2",
        "x" * 64,
    ],
)
async def test_a_leader_name_that_is_not_a_node_id_reaches_the_hook_as_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, leader: str
) -> None:
    caplog.set_level(logging.WARNING, logger="sidecar.hooks")
    env = await hook_environment(
        tmp_path, "demoted", epoch=42, leader=leader, why=Why("resign", "resigned")
    )

    assert env["RINGSIDE_LEADER"] == ""
    assert env["RINGSIDE_EPOCH"] == "42"  # the hook still runs, with everything else
    [warning] = [r for r in caplog.records if r.name == "sidecar.hooks"]
    message = warning.getMessage()
    assert repr(leader)[:40] in message  # shown escaped: no NUL or newline in the log line
    assert "\x00" not in message
    assert "\n" not in message


async def test_a_long_leader_name_is_shown_truncated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sidecar.hooks")
    await hook_environment(tmp_path, "demoted", epoch=1, leader="$" * 10_000)
    [warning] = [r for r in caplog.records if r.name == "sidecar.hooks"]
    assert len(warning.getMessage()) < 200


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("lease validity\x00 ran out", "lease validity ran out"),
        ("resigned\nRINGSIDE_LEADER=evil", "resignedRINGSIDE_LEADER=evil"),
        ("\x1b[31mshutting down\x1b[0m\r\t", "[31mshutting down[0m"),
        ("lost \ud800it", "lost it"),
        ("y" * 500, "y" * 200),
    ],
)
async def test_the_reason_detail_is_one_line_without_control_characters(
    tmp_path: Path, reason: str, expected: str
) -> None:
    why = Why("lost", reason)
    env = await hook_environment(tmp_path, "demoted", epoch=1, leader=None, why=why)
    assert (env["RINGSIDE_REASON"], env["RINGSIDE_REASON_DETAIL"]) == ("lost", expected)


async def test_without_a_reason_the_variable_is_empty(tmp_path: Path) -> None:
    """A hook fired without a reason still gets all six variables."""
    env = await hook_environment(tmp_path, "demoted", epoch=7, leader="hetzner-cpu3")
    assert env["RINGSIDE_REASON"] == ""
    assert set(env) == set(HOOK_VARIABLES)


async def test_a_command_that_cannot_start_is_recorded_without_an_exit_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A NUL byte in the command: Python refuses to start it (ValueError, not OSError)."""
    caplog.set_level(logging.ERROR, logger="sidecar.hooks")
    async with role_hooks("echo started\x00") as hooks:
        hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
        [result] = await results(hooks, 1)
        hooks.fire("elected", epoch=2, leader="hetzner-cpu1")  # the worker carries on
        await results(hooks, 2)

    assert result.exit_code is None
    assert not result.timed_out
    [record, _] = [r for r in caplog.records if r.name == "sidecar.hooks"]
    assert "could not start" in record.getMessage()
    assert "ValueError" in record.getMessage()


async def test_unknown_epoch_and_leader_are_empty_strings(tmp_path: Path) -> None:
    out = tmp_path / "env"
    dump_env = f"env > {out}.tmp && mv {out}.tmp {out}"
    async with role_hooks(None, dump_env) as hooks:
        hooks.fire("demoted", epoch=None, leader=None)
        await file_lines(out, 1)

    lines = read_lines(out)
    assert "RINGSIDE_EVENT=demoted" in lines
    assert "RINGSIDE_EPOCH=" in lines
    assert "RINGSIDE_LEADER=" in lines


async def test_a_failing_hook_is_logged_with_its_exit_code_and_last_stderr_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.hooks")
    failing = "echo starting >&2; echo 'trainer: disk full' >&2; exit 3"
    async with role_hooks(failing) as hooks:
        hooks.fire("elected", epoch=7, leader="hetzner-cpu1")
        [result] = await results(hooks, 1)

    assert result.event == "elected"
    assert result.command == failing
    assert result.exit_code == 3
    assert not result.timed_out
    [record] = [r for r in caplog.records if r.name == "sidecar.hooks"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "exit code 3" in message
    assert message.endswith("trainer: disk full")
    assert "\n" not in message


async def test_a_hanging_hook_is_killed_while_the_loop_keeps_ticking(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    hanging = f"sleep 60 & echo $! > {pidfile}; wait"
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.05)

    ticker = asyncio.create_task(tick())
    try:
        async with role_hooks(hanging, timeout_s=0.5) as hooks:
            hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
            [result] = await results(hooks, 1)
    finally:
        ticker.cancel()
        await asyncio.wait([ticker])

    assert result.timed_out
    assert result.exit_code is None
    assert 0.5 <= result.duration_s < 3.0
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.5
    # The kill reached the whole process group, not just the shell.
    background_sleep = int(read_lines(pidfile)[0])

    async def sleep_killed() -> bool:
        return gone_or_zombie(background_sleep)

    await wait_for(sleep_killed, 5.0)


async def test_hooks_run_one_at_a_time_in_the_order_fired(tmp_path: Path) -> None:
    log_file = tmp_path / "events"
    # "elected" is the slower one: run concurrently, "demoted" would overtake it.
    elected = f"sleep 0.2; echo elected-$RINGSIDE_EPOCH >> {log_file}"
    demoted = f"echo demoted-$RINGSIDE_EPOCH >> {log_file}"
    async with role_hooks(elected, demoted) as hooks:
        hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
        hooks.fire("demoted", epoch=1, leader=None)
        hooks.fire("elected", epoch=5, leader="hetzner-cpu1")
        lines = await file_lines(log_file, 3)
        recorded = await results(hooks, 3)

    assert lines == ["elected-1", "demoted-1", "elected-5"]
    assert [r.event for r in recorded] == ["elected", "demoted", "elected"]


async def test_fire_returns_at_once() -> None:
    async with role_hooks("sleep 1", "sleep 1", timeout_s=0.2) as hooks:
        events: tuple[RoleEvent, ...] = ("elected", "demoted", "elected")
        for event in events:
            started = time.perf_counter()
            hooks.fire(event, epoch=1, leader="hetzner-cpu1")
            assert time.perf_counter() - started < 0.01


async def test_a_background_daemon_does_not_hold_the_hook_open(tmp_path: Path) -> None:
    """A hook that leaves a daemon running finishes when its shell exits, daemon untouched."""
    pidfile = tmp_path / "daemon.pid"
    starts_daemon = f"sleep 30 & echo $! > {shlex.quote(str(pidfile))}"
    async with role_hooks(starts_daemon, timeout_s=5.0) as hooks:
        hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
        [result] = await results(hooks, 1, within_s=2.0)
    daemon = int(read_lines(pidfile)[0])
    try:
        assert result.exit_code == 0
        assert not result.timed_out
        assert result.duration_s < 2.0
        assert not gone_or_zombie(daemon)
    finally:
        os.kill(daemon, signal.SIGKILL)


async def test_close_waits_for_queued_hooks(tmp_path: Path) -> None:
    out = tmp_path / "done"
    hooks = RoleHooks(f"sleep 0.1; touch {out}", None, 5.0, node_id="hetzner-cpu1")
    hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
    await hooks.close()
    assert out.exists()
    assert [r.exit_code for r in hooks.last_results] == [0]


async def test_close_gives_up_on_queued_hooks_after_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "shell.pids"
    hang = f"echo $$ >> {pids}; exec sleep 60"
    hooks = RoleHooks(hang, hang, 0.3, node_id="hetzner-cpu1")
    hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
    hooks.fire("demoted", epoch=1, leader=None)  # queued behind it: 0.6 s of hooks in all
    await file_lines(pids, 1)
    started = time.monotonic()
    await hooks.close()
    assert time.monotonic() - started < 2.0
    assert len(hooks.last_results) < 2

    async def all_killed() -> bool:
        return all(gone_or_zombie(int(pid)) for pid in read_lines(pids))

    await wait_for(all_killed, 5.0)


async def test_fire_after_close_is_dropped() -> None:
    hooks = RoleHooks("true", "true", 1.0, node_id="hetzner-cpu1")
    await hooks.close()
    hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
    assert not hooks.last_results


async def test_no_configured_hook_is_a_no_op() -> None:
    async with role_hooks(None, "") as hooks:
        hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
        hooks.fire("demoted", epoch=1, leader=None)
        assert hooks._worker is None
    assert not hooks.last_results


async def test_a_command_that_cannot_run_is_recorded_as_failed() -> None:
    async with role_hooks("/nonexistent/ringside-hook") as hooks:
        hooks.fire("elected", epoch=1, leader="hetzner-cpu1")
        [result] = await results(hooks, 1)
    assert result.exit_code == 127
    assert not result.timed_out
