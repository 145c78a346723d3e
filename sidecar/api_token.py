"""The local API's token: configured (`http.token`), or generated at first start into a file
only the sidecar's user can read, which `ringside resign` and the orchestrator read too.

Without a token, any process on the node could make the leader resign. The file lives beside
the instance lock (`/run/ringside/<cluster>.token` by default; `http.token_file` moves it), is
created with mode 0600 before it holds anything, and is kept across restarts while it stays
private: a file others can read or write, or that is not a regular file, is replaced.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from sidecar.errors import ConfigError
from sidecar.files import read_text, write_private

MAX_TOKEN_BYTES = 256


def token_path(token_file: Path | None, lock_file: Path) -> Path:
    """Where the generated token lives: `http.token_file`, else beside the lock file."""
    return token_file if token_file is not None else lock_file.with_suffix(".token")


def read_token(path: Path) -> str | None:
    """The token in `path`, or None when there is no usable one (missing, unreadable, empty)."""
    try:
        token = read_text(path, limit=MAX_TOKEN_BYTES).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def ensure_token(path: Path) -> str:
    """The token in `path` when the file is private and ours; else a new one, written there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise ConfigError(f"cannot use the API token file {path}: {e.strerror or e}") from e
    private = (
        st is not None
        and stat.S_ISREG(st.st_mode)
        and st.st_uid == os.geteuid()
        and not st.st_mode & 0o077
    )
    existing = read_token(path) if private else None
    if existing:
        return existing
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, token)
    except OSError as e:
        if st is not None and not private:  # e.g. a read-only secret with the wrong owner
            raise ConfigError(
                f"the API token file {path} must be a regular file owned by uid {os.geteuid()} "
                f"with mode 0600, and cannot be replaced: {e.strerror or e}"
            ) from e
        raise ConfigError(f"cannot write the API token file {path}: {e.strerror or e}") from e
    return token
