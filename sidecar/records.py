"""The data ringside writes to etcd, and reads back as untrusted input (rule 14).

One place for the shape of what a node publishes about itself (its member record, with its
orchestrator's health) and for reading it back: size-capped, schema-checked, and believed only
under the key of the node it names. Only pydantic and the standard library: the view, the API
bodies and `ringside status --etcd` need the types without the daemon's I/O.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import datetime
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
)

from sidecar import __version__
from sidecar.compat import UTC
from sidecar.store.model import KeyValue

log = logging.getLogger(__name__)

ELECTION_LAYOUT = 2  # candidate keys named by node id (see sidecar.keys)
MAX_RECORD_BYTES = 16 * 1024  # a record is a few hundred bytes; anything huge is not ours
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This kernel's boot id (shared by every container on the host); "" where unknown."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


class OrchestratorHealth(BaseModel):
    """The orchestrator's state as this node last published it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    healthy: bool
    detail: str  # "HTTP 200", "HTTP 503", "connection refused", ...
    since: str  # when it entered this state (UTC, ISO 8601)


class MemberRecord(BaseModel):
    """What a node publishes about itself. Unknown fields from newer versions are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node_id: str
    addresses: tuple[str, ...] = ()
    labels: dict[str, str] = {}
    eligible: bool = False
    version: str = ""
    pid: int = 0
    hostname: str = ""
    started_at: str = ""
    boot_id: str = ""
    instance: str = ""  # the token in this process's lock file (see sidecar.lock)
    # How this node names its candidate key: 2 by its node id; 1 by its lease, as ringside 0.1
    # did (a record without the field, see `decode`). Read during an upgrade (decision 0010).
    election_layout: int = ELECTION_LAYOUT
    orchestrator: OrchestratorHealth | None = None  # None: no health URL configured
    preferred: bool = False  # this node's config names it the preferred leader (decision 0017)
    leaving: str = ""  # set as the sidecar stops, just before its lease is revoked: why
    # The seconds within which this node proves it is alive by writing its keys again
    # (decision 0022): a key not rewritten for that long may be deposed, whatever its lease
    # says. 0: a sidecar from before proofs of life, which only its lease can end.
    proof_ttl: int = 0

    @field_validator("orchestrator", mode="wrap")
    @classmethod
    def _unreadable_health_is_unknown(
        cls, value: object, handler: ValidatorFunctionWrapHandler
    ) -> OrchestratorHealth | None:
        """A health entry this version cannot read (a newer shape) is unknown, and must not make
        the whole record unreadable: the member still counts, with its addresses and labels."""
        try:
            health: OrchestratorHealth | None = handler(value)
        except ValidationError:
            return None
        return health

    @classmethod
    def for_this_process(
        cls,
        node_id: str,
        *,
        advertise: tuple[str, ...],
        discovered: tuple[str, ...],
        labels: dict[str, str],
        eligible: bool,
        instance: str = "",
    ) -> MemberRecord:
        return cls(
            node_id=node_id,
            addresses=tuple(dict.fromkeys((*advertise, *discovered))),
            labels=labels,
            eligible=eligible,
            version=__version__,
            pid=os.getpid(),
            hostname=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            boot_id=boot_id(),
            instance=instance,
        )

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> MemberRecord | None:
        """The record, or None when the bytes are not a record (logged by the caller)."""
        if len(raw) > MAX_RECORD_BYTES:
            return None
        try:
            record = cls.model_validate_json(raw)
        except (ValidationError, ValueError):
            return None
        if "election_layout" not in record.model_fields_set:
            return record.model_copy(update={"election_layout": 1})  # written by ringside 0.1
        return record


def json_object(raw: bytes, limit: int) -> dict[str, object] | None:
    """`raw` as a JSON object, or None when it is longer than `limit` bytes or no object."""
    if len(raw) > limit:
        return None
    try:
        document = json.loads(raw)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def printable(text: str, limit: int = 64) -> str:
    """`text` from etcd made safe for a log line or a terminal: printable, short."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "")


def parse_record(kv: KeyValue, node_id: str) -> MemberRecord | None:
    """The record under `members/<node_id>`, or None (logged) when it is not one, or names
    another node: a record is only believed under its own node's key."""
    record = MemberRecord.decode(kv.value)
    if record is None:
        log.warning("member key %s holds no valid record: %r", kv.key, kv.value[:80])
    elif record.node_id != node_id:
        log.warning("member key %s holds a record for %r; ignored", kv.key, record.node_id[:80])
        return None
    return record
