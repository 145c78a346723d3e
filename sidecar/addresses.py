"""The addresses this node publishes in its member record, best first.

Other nodes and operators take the first address that works, so the order matters more than
the list: every Docker host has a ``docker0`` at 172.17.0.1, and a list sorted alphabetically
put that same unreachable address first on half the fleet. So: the addresses the inventory
gives this node come first (they are how the rest of the cluster already reaches it), then
what the host's live interfaces carry, IPv4 before IPv6, each family in the system's interface
order. Interfaces that are down, loopback and link-local addresses, and the bridges and virtual
links that container runtimes and CNI plugins create are left out: their addresses are private
to this host, and the same on many hosts. An operator who knows better (NAT, containers) lists
addresses with ``advertise_addresses`` / ``RINGSIDE_ADVERTISE_ADDRESSES``, published before all
of these.

Example::

    discovered_addresses(preferred=("100.64.0.21", "203.0.113.21"))
    # ("100.64.0.21", "203.0.113.21", "10.0.0.5", "2001:db8::5")
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Protocol

import psutil

from sidecar.inventory import normalized

# Interfaces made by Docker, Podman, libvirt, LXC and Kubernetes networking (CNI, Flannel,
# Calico, kube-proxy's IPVS dummy), by name prefix: host-local, never how a peer reaches us.
VIRTUAL_INTERFACE_PREFIXES: Final = (
    "docker",
    "br-",
    "veth",
    "cni",
    "flannel",
    "virbr",
    "lxcbr",
    "podman",
    "cali",
    "vxlan",
    "kube-",
)


class InterfaceAddress(Protocol):
    """What is read of one `psutil.net_if_addrs()` entry."""

    @property
    def family(self) -> int: ...

    @property
    def address(self) -> str: ...


class InterfaceStats(Protocol):
    """What is read of one `psutil.net_if_stats()` entry."""

    @property
    def isup(self) -> bool: ...


def discovered_addresses(preferred: Sequence[str] = ()) -> tuple[str, ...]:
    """`preferred` (this node's inventory addresses), then this host's reachable-looking
    interface addresses, IPv4 before IPv6, without duplicates."""
    try:
        interfaces, stats = psutil.net_if_addrs(), psutil.net_if_stats()
    except OSError:  # no /proc or /sys to read (a locked-down container): what we were told
        interfaces, stats = {}, {}
    return choose_addresses(interfaces, stats, preferred)


def choose_addresses(
    interfaces: Mapping[str, Sequence[InterfaceAddress]],
    stats: Mapping[str, InterfaceStats],
    preferred: Sequence[str] = (),
) -> tuple[str, ...]:
    """`discovered_addresses` from given interface facts (the shapes psutil returns).

    `preferred` come first, in their order, whether or not an interface here carries them:
    behind NAT (Lambda, cloud public IPs) the address peers use is on no local interface. An
    interface missing from `stats` counts as up: psutil leaves out those it cannot query, and
    dropping a real address is worse than keeping one too many.
    """
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for name, addresses in interfaces.items():
        if _is_virtual(name) or (name in stats and not stats[name].isup):
            continue
        for entry in addresses:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = _parse(entry.address)
            if address is not None and _is_reachable(address):
                found.append(address)
    found.sort(key=lambda a: a.version)  # stable: interface order within each family
    return _unique((*(normalized(p) for p in preferred), *(a.compressed for a in found)))


def _is_virtual(interface: str) -> bool:
    return interface.lower().startswith(VIRTUAL_INTERFACE_PREFIXES)


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address without its IPv6 zone (``fe80::1%eth0``), or None when it is not one."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def _is_reachable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """False for addresses no other host can use to reach this one."""
    return not (
        address.is_loopback
        or address.is_link_local  # 169.254.0.0/16, fe80::/10
        or address.is_unspecified
        or address.is_multicast
    )


def _unique(addresses: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for a in addresses if a))
