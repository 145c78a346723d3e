"""Reading the small files ringside is pointed at (config, inventory, password, identity files)
as untrusted input: regular files only, of bounded size.

`RINGSIDE_CONFIG=/dev/zero` once read without end into a MemoryError, and a FIFO hung the
start. Each file is opened without blocking (a FIFO with no writer does not hang the open),
checked to be a regular file, and read up to its limit and no further. A secret (the etcd
password file) must moreover be closed to group and others (mode 0600 or stricter).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class OpenToOthers(OSError):
    """A secret file that group or others may read or write, refused as ssh refuses such a
    private key: whoever could read it may already have used it. `mode` is its permission bits."""

    def __init__(self, path: Path, mode: int) -> None:
        super().__init__(f"{path}: mode {mode:04o}")
        self.path = path
        self.mode = mode
        self.strerror = f"mode {mode:04o}"

    def advice(self) -> str:
        """One sentence: the file, its mode and the command that fixes it."""
        return (
            f"{self.path} has mode {self.mode:04o}: group or others may read or write it; "
            f"run `chmod 600 {self.path}`"
        )


class UnfitFile(OSError):
    """A path that is not a regular file of at most the allowed size; `reason` says which."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason
        self.strerror = reason  # what callers print for any OSError


def _unfit(path: Path, mode: int) -> UnfitFile | None:
    if stat.S_ISDIR(mode):
        return UnfitFile(path, "Is a directory")  # worded as the OS says it
    if not stat.S_ISREG(mode):
        return UnfitFile(path, "not a regular file")
    return None


def read_text(path: Path, *, limit: int, private: bool = False) -> str:
    """The UTF-8 text of the regular file at `path`, at most `limit` bytes.

    Raises `UnfitFile` for a device, FIFO, directory or a file over the limit, OSError when it
    cannot be opened, UnicodeDecodeError when it is not UTF-8. With `private` (a secret),
    `OpenToOthers` when group or others have any access to it: the mode is read from the file
    opened, so a symlink is judged by what it points at and a swap after the check is no use.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        unfit = _unfit(path, mode)
        if unfit is not None:
            raise unfit
        if private and mode & 0o077:
            raise OpenToOthers(path, stat.S_IMODE(mode))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnfitFile(path, f"larger than {limit} bytes")
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def check_readable(path: Path) -> None:
    """Raise `UnfitFile` or OSError unless `path` is a regular file this process can open."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        unfit = _unfit(path, os.fstat(fd).st_mode)
        if unfit is not None:
            raise unfit
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Write `text` (and a newline) to `path`, readable by this user only from the first byte,
    replacing any old file in one rename; a symlink planted at the temporary name is refused."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    os.replace(temporary, path)
