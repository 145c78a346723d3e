"""Which node am I, and why.

The node id names this machine in etcd (``members/<node_id>``), so a wrong id is worse than
none: a Docker container id or a dashed-IP hostname registers a node nobody recognises, and two
machines under one name fight over one key. Candidates are tried in a fixed order and every one
is reported, so ``ringside identity`` shows exactly why a name won.

Explicit sources (the flag, both environment variables, the two node-id files, the config file)
are operator intent: the first one present decides, and if its value is unusable resolution
fails instead of quietly falling back to a guess. Derived sources (an inventory match, the
hostname) are guesses: an unusable one is skipped and the next is tried.

Example::

    result = resolve_identity(load_config(None, os.environ, {}), os.environ, HostFacts.gather())
    result.node_id      # "hetzner-cpu1"
    result.source       # "env RINGRIFT_NODE_ID"
"""

import ipaddress
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sidecar.addresses import discovered_addresses
from sidecar.config import LoadedConfig
from sidecar.errors import ConfigError
from sidecar.files import read_text
from sidecar.inventory import Inventory, load_inventory
from sidecar.settings import DNS_LABEL

_CONTAINER_ID: Final = re.compile(r"[0-9a-f]{12}|[0-9a-f]{64}")
_DASHED_IP: Final = re.compile(r"(ip-)?\d{1,3}(-\d{1,3}){3}")
_TAILSCALE_TIMEOUT_S: Final = 1.0

CHOSEN: Final = "chosen"
NOT_SET: Final = "not set"
NOT_IN_INVENTORY: Final = "not in inventory"
EARLIER_WON: Final = "skipped: an earlier source won"
EARLIER_FAILED: Final = "skipped: an earlier explicit source was rejected"


@dataclass(frozen=True)
class HostFacts:
    """What this machine says about itself; injected so tests never depend on the real host."""

    hostname: str
    addresses: tuple[str, ...] = ()

    @classmethod
    def gather(cls) -> "HostFacts":
        """The hostname and this host's addresses (`sidecar.addresses`: the interfaces a peer
        could reach, the same list the member record publishes), Tailscale's first."""
        addresses = dict.fromkeys([*_tailscale_addresses(), *discovered_addresses()])
        return cls(hostname=socket.gethostname(), addresses=tuple(addresses))


@dataclass(frozen=True)
class SourceReport:
    """One identity source, the value it offered (None if none) and what became of it."""

    source: str
    value: str | None
    outcome: str


@dataclass(frozen=True)
class IdentityResult:
    """The chosen node id, the source it came from, and a report on every source in order."""

    node_id: str
    source: str
    reports: tuple[SourceReport, ...]
    inventory: Inventory | None = None  # as read for the choice; the daemon serves this one


class IdentityError(ConfigError):
    """No usable node id; `reports` says what each source offered and why it was not used."""

    def __init__(self, message: str, reports: tuple[SourceReport, ...]) -> None:
        super().__init__(message)
        self.reports = reports


@dataclass(frozen=True)
class _Candidate:
    """A value one source offers, before it is judged; `unreadable` says why a file failed."""

    source: str
    value: str | None
    explicit: bool
    unreadable: str | None = None


def validate_node_id(value: str) -> str | None:
    """Why `value` cannot be a node id, or None if it can.

    A node id is a lowercase DNS label (a-z, 0-9, '-', 1-63 characters, no '-' at either end)
    that names one machine: not ``localhost``, not a Docker container id (12 or 64 hex
    digits), not an IP address, dashed (``192-222-51-29``, ``ip-10-0-0-5``) or dotted.
    """
    lowered = value.lower()
    if not value:
        return "empty"
    if lowered == "localhost" or lowered.startswith("localhost."):
        return "'localhost' names every machine, not this one"
    if _CONTAINER_ID.fullmatch(lowered):
        return "looks like a Docker container id (12 or 64 hex digits)"
    if _DASHED_IP.fullmatch(lowered.split(".")[0]):
        return "looks like an IP address written with dashes, not a node name"
    if _is_ip_address(value):
        return "an IP address, not a node name"
    if value != lowered:
        return "has uppercase letters; node ids are lowercase"
    if len(value) > 63:
        return f"{len(value)} characters long; the limit is 63"
    if not DNS_LABEL.fullmatch(value):
        return "only a-z, 0-9 and '-' are allowed, with no '-' at either end"
    return None


def resolve_identity(
    loaded: LoadedConfig, env: Mapping[str, str], facts: HostFacts
) -> IdentityResult:
    """Pick this node's id from the sources in order; raise `IdentityError` if none is usable.

    The order: ``--node-id``; ``RINGSIDE_NODE_ID``; ``RINGRIFT_NODE_ID``; the first non-empty
    line of ``identity.node_id_file``; ``NODE_ID=`` in ``identity.p2p_defaults_file``; the
    config file's ``node_id``; the hostname or an address matched against the inventory; the
    hostname's first label, lowercased. With an inventory configured the id must be one of its
    hosts unless ``identity.allow_unknown_node`` is set.
    """
    config = loaded.config
    inventory = load_inventory(config.inventory) if config.inventory is not None else None
    listed = None
    if inventory is not None and not config.identity.allow_unknown_node:
        listed = frozenset(inventory.hosts)
    reports: list[SourceReport] = []
    winner: _Candidate | None = None
    failure: str | None = None
    for candidate in _candidates(loaded, env, facts, inventory):
        if winner is not None or failure is not None:
            decided = EARLIER_WON if winner is not None else EARLIER_FAILED
            outcome = NOT_SET if candidate.value is None else decided
            reports.append(SourceReport(candidate.source, candidate.value, outcome))
            continue
        outcome, refusal = _judge(candidate, listed, config.inventory)
        reports.append(SourceReport(candidate.source, candidate.value, outcome))
        if outcome == CHOSEN:
            winner = candidate
        elif candidate.explicit and refusal is not None:
            failure = refusal
    if winner is None or winner.value is None:
        hint = f" (it must be a host in inventory {config.inventory})" if listed else ""
        failure = failure or (
            "no usable node id: pass --node-id, set RINGSIDE_NODE_ID, or write the name "
            f"to {config.identity.node_id_file}{hint}"
        )
        raise IdentityError(failure, tuple(reports))
    return IdentityResult(winner.value, winner.source, tuple(reports), inventory)


def _judge(
    candidate: _Candidate, listed: frozenset[str] | None, inventory_path: Path | None
) -> tuple[str, str | None]:
    """A candidate's outcome and, when it is refused, the error line an explicit one raises."""
    value = candidate.value
    if value is None and candidate.unreadable is None:
        return NOT_SET, None
    problem = candidate.unreadable or validate_node_id(value or "")
    if problem is not None:
        subject = "node id" if value is None else f"node id {value!r}"
        return f"rejected: {problem}", f"{subject} from {candidate.source} is not usable: {problem}"
    if listed is not None and value not in listed:
        refusal = (
            f"node id {value!r} from {candidate.source} is not a host in inventory "
            f"{inventory_path}; fix it or pass --allow-unknown-node"
        )
        return NOT_IN_INVENTORY, refusal
    return CHOSEN, None


def _candidates(
    loaded: LoadedConfig, env: Mapping[str, str], facts: HostFacts, inventory: Inventory | None
) -> list[_Candidate]:
    settings = loaded.config.identity
    config_file = f"config file {loaded.path} (node_id)" if loaded.path else "config node_id"
    short_hostname = facts.hostname.split(".")[0].lower() or None
    return [
        _Candidate("flag --node-id", _text(loaded.offered("flag", "node_id")), explicit=True),
        _Candidate("env RINGSIDE_NODE_ID", _text(loaded.offered("env", "node_id")), explicit=True),
        _Candidate("env RINGRIFT_NODE_ID", _text(env.get("RINGRIFT_NODE_ID")), explicit=True),
        _file_candidate(f"file {settings.node_id_file}", settings.node_id_file, _first_line),
        _file_candidate(
            f"file {settings.p2p_defaults_file} (NODE_ID)",
            settings.p2p_defaults_file,
            lambda text: _shell_variable(text, "NODE_ID"),
        ),
        _Candidate(config_file, _text(loaded.offered("file", "node_id")), explicit=True),
        _inventory_candidate(inventory, loaded.config.inventory, facts),
        _Candidate("hostname", short_hostname, explicit=False),
    ]


def _text(value: object) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def _file_candidate(source: str, path: Path, parse: Callable[[str], str | None]) -> _Candidate:
    try:
        text = read_text(path, limit=64 * 1024)
    except FileNotFoundError:
        return _Candidate(source, None, explicit=True)
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        return _Candidate(source, None, explicit=True, unreadable=f"cannot read it: {reason}")
    return _Candidate(source, parse(text), explicit=True)


def _first_line(text: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


def _shell_variable(text: str, name: str) -> str | None:
    """The last ``NAME=value`` assignment in a shell-style defaults file, unquoted."""
    value: str | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip()
        key, sep, rest = line.partition("=")
        if sep and key == name:
            value = _shell_word(rest.strip())
    return value or None


def _shell_word(text: str) -> str:
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    words = text.split()
    return words[0] if words else ""


def _inventory_candidate(
    inventory: Inventory | None, path: Path | None, facts: HostFacts
) -> _Candidate:
    if inventory is None:
        return _Candidate("inventory (none configured)", None, explicit=False)
    probes = [("hostname", facts.hostname), ("hostname", facts.hostname.split(".")[0])]
    probes += [("address", address) for address in facts.addresses]
    for kind, probe in probes:
        match = inventory.identify(probe) if probe else None
        if match is not None:
            source = f"inventory {path} ({kind} {probe} = {match.field})"
            return _Candidate(source, match.host, False)
    return _Candidate(f"inventory {path} (no hostname or address matches)", None, False)


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _tailscale_addresses() -> list[str]:
    """``tailscale ip`` output; Vast.ai's userspace Tailscale has no interface to list."""
    binary = shutil.which("tailscale")
    if binary is None:
        return []
    try:
        completed = subprocess.run(
            [binary, "ip"],
            capture_output=True,
            text=True,
            timeout=_TAILSCALE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return completed.stdout.split() if completed.returncode == 0 else []
