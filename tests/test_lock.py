"""One sidecar per node: the kernel's flock decides, and a dead holder leaves no stale lock."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import sidecar.lock
from sidecar.errors import ConfigError
from sidecar.lock import AlreadyRunning, InstanceLock, default_lock_path, private_dir
from tests.paths import ROOT

HOLD_LOCK = """
import sys, time
from pathlib import Path
from sidecar.lock import InstanceLock
InstanceLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def other_process_holding(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A separate python process that has taken the lock at tmp_path/run/test.lock."""
    path = tmp_path / "run" / "test.lock"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None
        ready, _, _ = select.select([holder.stdout], [], [], 10.0)
        assert ready, "the holder process did not take the lock within 10 s"
        assert holder.stdout.readline() == "locked\n"
        yield path, holder
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()


def test_a_second_process_is_refused_with_the_holders_pid(
    other_process_holding: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, holder = other_process_holding
    with pytest.raises(AlreadyRunning) as refused:
        InstanceLock(path).acquire()
    assert str(refused.value) == (
        f"another ringside is running on this node (pid {holder.pid}, lock {path})"
    )
    assert refused.value.holder_pid == holder.pid


def test_a_killed_holder_leaves_no_stale_lock(
    other_process_holding: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, holder = other_process_holding
    holder.kill()  # SIGKILL: no cleanup code runs
    holder.wait(timeout=10)
    assert f"pid={holder.pid}\n" in path.read_text()

    with InstanceLock(path) as lock:
        assert lock.held
        assert path.read_text().startswith(f"pid={os.getpid()}\nstarted=")


def test_release_allows_another_acquire(tmp_path: Path) -> None:
    path = tmp_path / "test.lock"
    first = InstanceLock(path)
    first.acquire()
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        InstanceLock(path).acquire()  # flock is per open file, so this process counts too
    first.release()
    assert not first.held
    assert path.exists()

    with InstanceLock(path) as second:
        assert second.held
    first.acquire()
    first.release()


def test_acquire_twice_on_one_object_is_harmless(tmp_path: Path) -> None:
    with InstanceLock(tmp_path / "test.lock") as lock:
        lock.acquire()
        assert lock.held


def test_lock_file_and_parents_are_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "test.lock"
    with InstanceLock(path):
        mode = path.stat().st_mode & 0o777
        assert mode & 0o600 == 0o600
        assert mode & ~0o644 == 0  # never more than rw-r--r--, whatever the umask


def test_an_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("")
    with pytest.raises(ConfigError, match=f"cannot use instance lock {not_a_dir}/test.lock"):
        InstanceLock(not_a_dir / "test.lock").acquire()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    locked_dir = tmp_path / "readonly"
    locked_dir.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="cannot use instance lock"):
        InstanceLock(locked_dir / "sub" / "test.lock").acquire()


def test_default_path_is_run_ringside_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_lock_path("ringrift") == Path("/run/ringside/ringrift.lock")


def test_default_path_falls_back_to_the_runtime_then_temp_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sidecar.lock, "RUN_DIR", tmp_path / "missing")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_lock_path("ringrift") == Path("/run/user/1000/ringside/ringrift.lock")

    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    own = tmp_path / f"ringside-{os.getuid()}"
    own.mkdir(mode=0o700)
    os.chown(own, 1000, -1)  # as the user the test pretends to be (the tests run as root)
    assert default_lock_path("ringrift") == own / "ringrift.lock"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make another user's directory")
@pytest.mark.parametrize("setup", ["other owner", "group writable", "symlink"])
def test_a_temp_lock_directory_that_is_not_private_is_refused(tmp_path: Path, setup: str) -> None:
    """Another user who made our per-user directory first could hold our lock forever."""
    target = tmp_path / "ringside-0"
    if setup == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.mkdir(mode=0o700)
        if setup == "other owner":
            os.chown(target, 1000, -1)
        else:
            target.chmod(0o770)
    with pytest.raises(ConfigError, match="not a private directory"):
        private_dir(target)
    fresh = private_dir(tmp_path / "new")
    assert fresh.stat().st_mode & 0o777 == 0o700


def test_default_path_uses_a_writable_run_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sidecar.lock, "RUN_DIR", tmp_path)
    assert default_lock_path("ringrift") == tmp_path / "ringrift.lock"


@pytest.mark.parametrize("cluster", ["", "a/b", ".."])
def test_a_cluster_name_that_is_not_a_file_name_is_a_config_error(cluster: str) -> None:
    with pytest.raises(ConfigError):
        default_lock_path(cluster)
