"""One sidecar per node, enforced by an OS file lock.

Two sidecars on one node would register the same node id twice and campaign twice. The old
supervisor guarded against that with a lock *file*, and a crash left the file behind and kept the
orchestrator from starting. Here the guard is `fcntl.flock` on the file: the kernel drops the lock
the moment the holding process dies, however it dies, so there is never a stale lock to clean up.
The pid written into the file is for people reading it; the lock decides, never the file.

The file is never deleted, not even on release: deleting it would let a third process create a
new file under the same name and lock that while a second one still holds the old one.

The file also carries an instance token, a random name for the process that holds the lock,
which the sidecar puts in its member record. A sidecar that finds, in etcd, a record with the
token its lock file still held when it took the lock knows for certain that the record's
writer is dead: that process held this lock until the kernel released it. So a restart after
kill -9 can revoke its predecessor's lease at once instead of waiting out its TTL, with no
guessing from pids (which lie for zombies, and inside containers where the sidecar is pid 1
every time).

Example::

    with InstanceLock(default_lock_path("ringrift")):
        run_sidecar()
    # a second copy meanwhile fails with:
    # AlreadyRunning: another ringside is running on this node (pid 1234,
    #                 lock /run/ringside/ringrift.lock)
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
import tempfile
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Final

from sidecar.compat import UTC
from sidecar.errors import ConfigError, RingsideError

RUN_DIR: Final = Path("/run/ringside")
_HOLDER_INFO_MAX_BYTES: Final = 4096


class AlreadyRunning(RingsideError):
    """Another live process holds this node's instance lock."""

    def __init__(self, path: Path, holder_pid: int | None) -> None:
        pid = "pid unknown" if holder_pid is None else f"pid {holder_pid}"
        super().__init__(f"another ringside is running on this node ({pid}, lock {path})")
        self.path = path
        self.holder_pid = holder_pid


class InstanceLock:
    """An exclusive, non-blocking `flock` on `path`, held until `release` or process exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.instance = secrets.token_hex(8)  # this process's token, written once locked
        self.previous_instance: str | None = None  # the last holder's, read before overwriting

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise `AlreadyRunning`; an unusable path raises `ConfigError`.

        Taking a lock this object already holds does nothing.
        """
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_CLOEXEC: a daemon started by a hook must not inherit, and so keep, our lock.
            # O_NOFOLLOW: a symlink planted at the path must not make us write to its target.
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise ConfigError(
                    f"instance lock {self.path} is a symbolic link; refusing to follow it"
                ) from e
            raise ConfigError(
                f"cannot use instance lock {self.path}: {e.strerror or e}"
                " (set another lock path or fix the directory's permissions)"
            ) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder_pid = _read_holder_pid(fd)
            os.close(fd)
            raise AlreadyRunning(self.path, holder_pid) from None
        except OSError as e:
            os.close(fd)
            raise ConfigError(f"cannot lock instance lock {self.path}: {e.strerror or e}") from e
        unfit = _not_a_lock_file(fd)
        if unfit is not None:
            os.close(fd)
            raise ConfigError(f"instance lock {self.path} {unfit}; refusing to overwrite it")
        self._fd = fd
        self.previous_instance = _read_holder_field(fd, "instance")
        _write_holder_info(fd, self.instance)

    def release(self) -> None:
        """Give the lock up; the file stays (see the module docstring for why)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Blank the pid while still holding the lock, so nobody reads a stopped process in it.
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def default_lock_path(cluster: str) -> Path:
    """Where this node's lock for `cluster` lives when the config does not say.

    ``/run/ringside`` when running as root or when it is writable; else the user's runtime
    directory (``$XDG_RUNTIME_DIR``); else a per-user directory under the temp directory.
    """
    if not cluster or "/" in cluster or cluster in {".", ".."}:
        raise ConfigError(f"cluster name {cluster!r} cannot name a lock file")
    name = f"{cluster}.lock"
    if os.geteuid() == 0 or os.access(RUN_DIR, os.W_OK):
        return RUN_DIR / name
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime_dir:
        return Path(runtime_dir) / "ringside" / name
    return private_dir(Path(tempfile.gettempdir()) / f"ringside-{os.getuid()}") / name


def private_dir(path: Path) -> Path:
    """`path` as a directory only this user can write, created if missing.

    The temp directory is shared: another user could create our per-user directory first and
    then hold (or swap) our lock file in it, keeping this node's sidecar from ever starting.
    """
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise ConfigError(f"cannot use lock directory {path}: {e.strerror or e}") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"lock directory {path} is not a private directory of uid {os.geteuid()}"
            f" (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}); set lock_file"
        )
    return path


def _not_a_lock_file(fd: int) -> str | None:
    """Why the open file is not ours to overwrite (a lock path pointed at the config file
    once emptied it): not a regular file, or text that is not a holder note."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return "is not a regular file"
    try:
        text = os.pread(fd, _HOLDER_INFO_MAX_BYTES + 1, 0)
    except OSError:
        return None
    if len(text) > _HOLDER_INFO_MAX_BYTES:
        return "is too large to be a lock file"
    for line in text.decode(errors="replace").splitlines():
        key, sep, _ = line.partition("=")
        if line and (not sep or key not in ("pid", "started", "instance")):
            return "holds something other than a ringside holder note"
    return None


def _write_holder_info(fd: int, instance: str) -> None:
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    info = f"pid={os.getpid()}\nstarted={started}\ninstance={instance}\n".encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
    except OSError:
        pass  # informational only: the lock is held whether or not the note was written


def _read_holder_pid(fd: int) -> int | None:
    pid = _read_holder_field(fd, "pid")
    return int(pid) if pid is not None and pid.isdigit() else None


def _read_holder_field(fd: int, name: str) -> str | None:
    """One `name=value` line of the holder note, or None (the note is advisory, never trusted
    beyond this: a token only ever matches a record this lock's holder wrote)."""
    try:
        text = os.pread(fd, _HOLDER_INFO_MAX_BYTES, 0).decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == name and value.strip():
            return value.strip()
    return None
