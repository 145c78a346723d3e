"""Which addresses a node publishes, and in which order, from given interface facts."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import pytest

from sidecar.addresses import choose_addresses, discovered_addresses
from sidecar.inventory import Inventory, load_inventory
from tests.paths import EXAMPLE_INVENTORY

AF_PACKET = getattr(socket, "AF_PACKET", 17)


@dataclass(frozen=True)
class Addr:
    family: int
    address: str


@dataclass(frozen=True)
class Stats:
    isup: bool


def v4(address: str) -> Addr:
    return Addr(socket.AF_INET, address)


def v6(address: str) -> Addr:
    return Addr(socket.AF_INET6, address)


UP = Stats(isup=True)
DOWN = Stats(isup=False)


def test_a_down_interface_is_skipped() -> None:
    interfaces = {"eth0": [v4("10.0.0.5")], "eth1": [v4("10.0.1.5")]}
    assert choose_addresses(interfaces, {"eth0": UP, "eth1": DOWN}) == ("10.0.0.5",)


@pytest.mark.parametrize(
    "name",
    [
        "docker0",
        "br-3f2a9c1d7e4b",
        "veth12ab34c",
        "cni0",
        "flannel.1",
        "virbr0",
        "lxcbr0",
        "podman0",
        "cali8d3f0a1b2c4",
        "vxlan.calico",
        "kube-ipvs0",
    ],
)
def test_container_and_virtual_bridges_are_skipped(name: str) -> None:
    interfaces = {name: [v4("172.17.0.1"), v6("fd00:17::1")], "eth0": [v4("10.0.0.5")]}
    assert choose_addresses(interfaces, {name: UP, "eth0": UP}) == ("10.0.0.5",)


def test_a_bridge_that_is_only_named_like_one_is_kept() -> None:
    """`br0` is a host bridge a VM host's real address lives on; only `br-*` is Docker's."""
    assert choose_addresses({"br0": [v4("10.0.0.5")]}, {"br0": UP}) == ("10.0.0.5",)


def test_loopback_link_local_and_non_ip_addresses_are_skipped() -> None:
    interfaces = {
        "lo": [v4("127.0.0.1"), v6("::1")],
        "eth0": [
            Addr(AF_PACKET, "52:54:00:12:34:56"),
            v4("169.254.10.20"),
            v6("fe80::5054:ff:fe12:3456%eth0"),
            v4("10.0.0.5"),
            v6("2001:db8::5"),
        ],
    }
    assert choose_addresses(interfaces, {"lo": UP, "eth0": UP}) == ("10.0.0.5", "2001:db8::5")


def test_ipv4_before_ipv6_and_otherwise_the_interface_order() -> None:
    """Not alphabetical: the system lists the primary interface first."""
    interfaces = {
        "eth0": [v6("2001:db8::5"), v4("203.0.113.5")],
        "tailscale0": [v4("100.64.0.5"), v6("fd7a:115c:a1e0::5")],
        "ens5": [v4("10.0.0.5")],
    }
    stats = dict.fromkeys(interfaces, UP)
    assert choose_addresses(interfaces, stats) == (
        "203.0.113.5",
        "100.64.0.5",
        "10.0.0.5",
        "2001:db8::5",
        "fd7a:115c:a1e0::5",
    )


def test_preferred_addresses_come_first_even_when_no_interface_has_them() -> None:
    interfaces = {"eth0": [v4("10.0.0.5"), v4("100.64.0.21")], "docker0": [v4("172.17.0.1")]}
    stats = {"eth0": UP, "docker0": UP}
    # 203.0.113.21 is a NAT'd public address: on no interface, still the one peers dial.
    preferred = ("100.64.0.21", "203.0.113.21")
    assert choose_addresses(interfaces, stats, preferred) == (
        "100.64.0.21",
        "203.0.113.21",
        "10.0.0.5",
    )


def test_duplicates_are_dropped_whatever_their_spelling() -> None:
    interfaces = {"eth0": [v6("2001:db8:0:0::5"), v4("10.0.0.5"), v4("10.0.0.5")]}
    preferred = ("2001:DB8::5", " 10.0.0.5", "")
    assert choose_addresses(interfaces, {"eth0": UP}, preferred) == ("2001:db8::5", "10.0.0.5")


def test_an_interface_without_stats_counts_as_up() -> None:
    assert choose_addresses({"eth0": [v4("10.0.0.5")]}, {}) == ("10.0.0.5",)


def test_this_host_publishes_no_loopback_or_link_local_address() -> None:
    for text in discovered_addresses():
        address = ipaddress.ip_address(text)
        assert not address.is_loopback, text
        assert not address.is_link_local, text


def test_inventory_addresses_of_a_host_are_its_tailnet_ip_then_its_ssh_ip() -> None:
    inventory = load_inventory(EXAMPLE_INVENTORY)
    assert inventory.addresses_of("hetzner-cpu1") == ("100.64.0.21", "203.0.113.21")
    assert inventory.addresses_of("mac-studio") == ("100.64.0.10",)  # the same address twice
    assert inventory.addresses_of("vast-29118471") == ()  # ssh_host is a gateway's name
    assert inventory.addresses_of("not-a-host") == ()


def test_an_ssh_host_shared_with_another_host_is_not_an_address_of_either() -> None:
    inventory = Inventory.model_validate(
        {
            "hosts": {
                "vast-1": {"ssh_host": "198.51.100.99"},
                "vast-2": {"ssh_host": "198.51.100.99", "tailscale_ip": "100.64.0.2"},
            }
        }
    )
    assert inventory.addresses_of("vast-1") == ()
    assert inventory.addresses_of("vast-2") == ("100.64.0.2",)
