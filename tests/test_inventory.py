"""Reading the orchestrator's distributed_hosts.yaml and matching names and addresses to hosts."""

from pathlib import Path

import pytest

from sidecar.errors import ConfigError
from sidecar.inventory import Inventory, InventoryError, InventoryMatch, load_inventory
from tests.paths import EXAMPLE_INVENTORY, ROOT


def lookup(inventory: Inventory, probe: str) -> str | None:
    """The host `probe` identifies, or None when no host or several do."""
    match = inventory.identify(probe)
    return match.host if match is not None else None


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory(EXAMPLE_INVENTORY)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "distributed_hosts.yaml"
    path.write_text(text)
    return path


def test_example_inventory_loads(inventory: Inventory) -> None:
    assert set(inventory.hosts) == {
        "mac-studio",
        "hetzner-cpu1",
        "hetzner-cpu2",
        "hetzner-cpu3",
        "nebius-h100-3",
        "vultr-a100-20gb",
        "lambda-gh200-3",
        "vast-29118471",
    }
    assert inventory.p2p_voters == [
        "hetzner-cpu1",
        "hetzner-cpu2",
        "nebius-h100-3",
        "vultr-a100-20gb",
        "mac-studio",
    ]
    assert inventory.preferred_leader == "mac-studio"
    cpu1 = inventory.hosts["hetzner-cpu1"]
    assert (cpu1.ssh_host, cpu1.tailscale_ip) == ("203.0.113.21", "100.64.0.21")
    assert inventory.hosts["vast-29118471"].tailscale_ip is None


def test_unknown_fields_are_ignored(inventory: Inventory) -> None:
    assert not hasattr(inventory.hosts["hetzner-cpu1"], "hetzner_id")
    assert not hasattr(inventory, "auto_sync")


@pytest.mark.parametrize(
    ("probe", "host"),
    [
        ("hetzner-cpu1", "hetzner-cpu1"),
        ("HETZNER-CPU1", "hetzner-cpu1"),
        ("203.0.113.22", "hetzner-cpu2"),
        ("100.64.0.13", "nebius-h100-3"),
        ("ssh8.vast.ai", "vast-29118471"),
        ("100.64.0.10", "mac-studio"),
    ],
)
def test_lookup_by_key_ssh_host_and_tailscale_ip(
    inventory: Inventory, probe: str, host: str
) -> None:
    assert lookup(inventory, probe) == host


@pytest.mark.parametrize("probe", ["hetzner-cpu9", "10.9.9.9", "", "ubuntu"])
def test_lookup_misses(inventory: Inventory, probe: str) -> None:
    assert lookup(inventory, probe) is None


def test_matches_say_which_field(inventory: Inventory) -> None:
    assert inventory.matches("hetzner-cpu3") == [InventoryMatch("hetzner-cpu3", "host key")]
    assert inventory.matches("203.0.113.23") == [InventoryMatch("hetzner-cpu3", "ssh_host")]
    assert inventory.matches("100.64.0.23") == [InventoryMatch("hetzner-cpu3", "tailscale_ip")]


def test_ipv6_addresses_compare_by_value(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "hosts:\n  six: {tailscale_ip: 'fd7a:0:0::01'}\n"))
    assert lookup(inventory, "fd7a::1") == "six"


def test_shared_ssh_gateway_identifies_nobody(tmp_path: Path) -> None:
    text = "hosts:\n  vast-1: {ssh_host: ssh8.vast.ai}\n  vast-2: {ssh_host: ssh8.vast.ai}\n"
    inventory = load_inventory(write(tmp_path, text))
    assert lookup(inventory, "ssh8.vast.ai") is None
    assert {match.host for match in inventory.matches("ssh8.vast.ai")} == {"vast-1", "vast-2"}


def test_host_key_beats_another_hosts_address(tmp_path: Path) -> None:
    text = "hosts:\n  alpha: {ssh_host: beta}\n  beta: {ssh_host: 10.0.0.2}\n"
    assert lookup(load_inventory(write(tmp_path, text)), "beta") == "beta"


def test_numbers_and_empty_entries_are_tolerated(tmp_path: Path) -> None:
    text = (
        "p2p_voters: [1234, gpu-a]\n"
        "preferred_leader: 1234\n"
        "hosts:\n"
        "  1234: {ssh_host: 5678, ssh_port: '22', vast_instance_id: 29118471}\n"
        "  gpu-a:\n"
    )
    inventory = load_inventory(write(tmp_path, text))
    assert set(inventory.hosts) == {"1234", "gpu-a"}
    assert inventory.hosts["1234"].ssh_host == "5678"
    assert inventory.hosts["gpu-a"].ssh_host is None
    assert inventory.p2p_voters == ["1234", "gpu-a"]
    assert inventory.preferred_leader == "1234"
    assert lookup(inventory, "5678") == "1234"


def test_empty_file_is_an_empty_inventory(tmp_path: Path) -> None:
    inventory = load_inventory(write(tmp_path, "hosts:\np2p_voters:\n"))
    assert inventory.hosts == {}
    assert inventory.p2p_voters == []


def test_missing_file() -> None:
    with pytest.raises(InventoryError) as caught:
        load_inventory(Path("/nonexistent/hosts.yaml"))
    assert str(caught.value) == (
        "cannot read inventory /nonexistent/hosts.yaml: No such file or directory"
    )


def test_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts:\n  a: {ssh_host: x\n  b: {}\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert str(caught.value).startswith(f"inventory {path} line 3: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n", "the top level must be a mapping, not a list"),
        ("hosts: [a, b]\n", "hosts (inventory {path}): Input should be a valid dictionary"),
        ("hosts:\n  a: [x]\n", "hosts.a (inventory {path}): Input should be a valid dictionary"),
        ("hosts:\n  a: {ssh_host: [x]}\n", "hosts.a.ssh_host (inventory {path}): Input should be"),
    ],
)
def test_malformed_inventory_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_inventory(path)
    assert isinstance(caught.value, InventoryError)
    assert expected.format(path=path) in str(caught.value)
    assert "\n" not in str(caught.value)


SHARED_FIXTURE = ROOT.parent / "shared" / "fixtures" / "distributed_hosts.example.yaml"


@pytest.mark.skipif(not SHARED_FIXTURE.is_file(), reason="no shared/ beside this checkout")
def test_the_repository_copy_of_the_inventory_is_the_shared_fixture() -> None:
    """The tests and `make demo` read the copy in config/; it must not drift from the source."""
    assert EXAMPLE_INVENTORY.read_bytes() == SHARED_FIXTURE.read_bytes()
