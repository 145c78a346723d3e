"""The orchestrator's inventory, ``distributed_hosts.yaml``: which hosts exist, how to reach them.

ringside reads only the fields it needs and ignores the rest: the orchestrator's file carries
many more per-host settings and grows new ones over time. Numbers where names are expected
(``vast_instance_id: 29118471``, a numeric host key) are read as text, as the orchestrator does.

Example::

    inventory = load_inventory(Path("distributed_hosts.yaml"))
    inventory.identify("hetzner-cpu1")  # InventoryMatch("hetzner-cpu1", "host key")
    inventory.identify("100.64.0.21")   # InventoryMatch("hetzner-cpu1", "tailscale_ip")
    inventory.identify("10.9.9.9")      # None
"""

import ipaddress
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sidecar.errors import ConfigError
from sidecar.yaml_input import describe_validation_error, read_yaml_mapping


class InventoryError(ConfigError):
    """The inventory file is unreadable or malformed; the message is one line naming the file."""


class _TolerantModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True)


class InventoryHost(_TolerantModel):
    """One host entry; only the addresses ringside matches against are read."""

    ssh_host: str | None = None
    tailscale_ip: str | None = None


class InventoryMatch(NamedTuple):
    """A host that matched a name or address, and which of its fields matched."""

    host: str
    field: Literal["host key", "ssh_host", "tailscale_ip"]


class Inventory(_TolerantModel):
    """The parts of ``distributed_hosts.yaml`` ringside uses."""

    hosts: dict[str, InventoryHost] = Field(default_factory=dict)
    p2p_voters: list[str] = Field(default_factory=list)
    preferred_leader: str | None = None

    @field_validator("hosts", mode="before")
    @classmethod
    def _empty_entries_are_hosts(cls, hosts: Any) -> Any:
        """``hosts:`` with no entries, or a host with no fields, still lists those hosts."""
        if hosts is None:
            return {}
        if isinstance(hosts, dict):
            return {name: {} if entry is None else entry for name, entry in hosts.items()}
        return hosts

    @field_validator("p2p_voters", mode="before")
    @classmethod
    def _empty_voters(cls, voters: Any) -> Any:
        return [] if voters is None else voters

    def matches(self, name_or_address: str) -> list[InventoryMatch]:
        """Every host whose key, ``ssh_host`` or ``tailscale_ip`` equals `name_or_address`.

        Names compare case-insensitively and IP addresses by value (``::01`` equals ``::1``).
        """
        wanted = normalized(name_or_address)
        found: list[InventoryMatch] = []
        for name, host in self.hosts.items():
            if normalized(name) == wanted:
                found.append(InventoryMatch(name, "host key"))
            elif host.ssh_host is not None and normalized(host.ssh_host) == wanted:
                found.append(InventoryMatch(name, "ssh_host"))
            elif host.tailscale_ip is not None and normalized(host.tailscale_ip) == wanted:
                found.append(InventoryMatch(name, "tailscale_ip"))
        return found

    def identify(self, name_or_address: str) -> InventoryMatch | None:
        """The one match that identifies a host (and through which field), or None.

        A host key always wins; a shared ``ssh_host`` (a Vast.ai gateway) identifies nobody.
        Each host matches through one field at most, so one match means one host.
        """
        found = self.matches(name_or_address)
        by_key = [match for match in found if match.field == "host key"]
        if by_key:
            return by_key[0]
        return found[0] if len(found) == 1 else None

    def addresses_of(self, node_id: str) -> tuple[str, ...]:
        """The IP addresses the inventory gives host `node_id`: ``tailscale_ip``, then
        ``ssh_host`` when it is an IP of this host alone; none for a host not listed.

        These are how the orchestrator already reaches the node, so it publishes them first. A
        name (``ssh8.vast.ai``) is no address, and an ``ssh_host`` shared with another host is a
        gateway, not this node.
        """
        host = self.hosts.get(node_id)
        if host is None:
            return ()
        found = [] if host.tailscale_ip is None else [host.tailscale_ip]
        ssh_host = host.ssh_host
        if ssh_host is not None and [m.host for m in self.matches(ssh_host)] == [node_id]:
            found.append(ssh_host)
        return tuple(dict.fromkeys(normalized(a) for a in found if _is_ip(a)))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True


def load_inventory(path: Path) -> Inventory:
    """Read and validate the inventory at `path`, raising `InventoryError` with one line."""
    data = read_yaml_mapping(path, "inventory", InventoryError)
    try:
        return Inventory.model_validate(data)
    except ValidationError as e:
        raise InventoryError(describe_validation_error(e, lambda loc: f"inventory {path}")) from e


def normalized(name_or_address: str) -> str:
    """One spelling per host name or address (case, surrounding spaces, IPv6 compression), so
    that two spellings of one compare equal."""
    text = name_or_address.strip().lower()
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text
