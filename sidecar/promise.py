"""The validity we promised, kept on disk so that it outlives the process that promised it.

An orchestrator told "you lead epoch 7 for 2.9 s more" goes on believing it after our process
dies: the promise binds the cluster until it runs out (design rule 22). A successor cannot
lead before our lease ends or our proof of life goes stale, both later than any promise. But a
supervisor that restarts a crashed sidecar within a second used to undo that: the new process
knows its predecessor is dead (the instance token, `sidecar.lock`) and revoked its lease at
once, and another node led while the old promise still ran (issue 21: 1.77 s of two leaders).

So before the first answer that promises past what is on disk, the sidecar writes the furthest
instant it may promise until its next renewal (`PromiseFile.cover`), on the monotonic clock,
with the kernel's boot id: CLOCK_MONOTONIC is one clock for every process of one boot, and a
reboot ends every process that could have heard the promise. A new process reads it
(`PromiseFile.inherited`) and leaves its predecessor's lease alone until then.

The file sits beside the lock file (`<lock>.promise`), written whole (temporary file, fsync,
rename), at most once per renewal. A file that cannot be read or parsed promises nothing:
a new process that cannot tell waits nothing extra, and the lease's own expiry still bounds a
successor.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from sidecar.records import boot_id

log = logging.getLogger(__name__)

MAX_PROMISE_BYTES = 1024


class PromiseFile:
    """`cover(until)` before promising up to `until`; `inherited()` in the next process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.covered = 0.0  # monotonic: what the file promises as far as this process wrote
        self.failed: str | None = None  # why the last write failed, if it did

    @classmethod
    def beside(cls, lock_path: Path) -> PromiseFile:
        return cls(lock_path.with_name(lock_path.name + ".promise"))

    def cover(self, until: float, epoch: int | None) -> bool:
        """Make the file promise at least until `until` (monotonic); True once it does.

        Synchronous on purpose: it runs before the answer that makes the promise is sent."""
        if until <= self.covered:
            return True
        document = {"boot_id": boot_id(), "monotonic_until": until, "epoch": epoch}
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as out:
                json.dump(document, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except OSError as e:
            if self.failed is None:
                log.error(
                    "cannot record our leadership promise in %s: %s; a restart of this "
                    "sidecar will not wait for it",
                    self.path, e.strerror, extra={"event": "promise_unrecorded"},
                )  # fmt: skip
            self.failed = str(e.strerror)
            return False
        self.covered, self.failed = until, None
        return True

    def forget(self) -> None:
        """After a clean stop, once our keys are gone: a successor leads already, so a new
        process of ours has no promise of ours to wait for."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.warning("cannot remove %s: %s", self.path, e.strerror)

    def inherited(self, now: float | None = None) -> float:
        """Seconds the previous process's promise still runs (0 when none, past, from
        another boot, or unreadable)."""
        now = time.monotonic() if now is None else now
        try:
            raw = self.path.read_bytes()[:MAX_PROMISE_BYTES]
            document = json.loads(raw)
        except (OSError, ValueError):
            return 0.0
        if not isinstance(document, dict) or document.get("boot_id") != boot_id():
            return 0.0
        until = document.get("monotonic_until")
        if not isinstance(until, (int, float)) or isinstance(until, bool):
            return 0.0
        return max(0.0, min(float(until) - now, MAX_WAIT_S))


MAX_WAIT_S = 600.0  # lease_ttl's own maximum: no file, however written, holds a restart longer
