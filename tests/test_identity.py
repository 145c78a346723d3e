"""Node identity: source order, validation, explicit-vs-derived semantics, inventory matching.

Host facts, environment and identity file paths are injected; nothing here reads the real /etc
or depends on this machine's hostname.
"""

import os
import stat
import time
from pathlib import Path

import pytest

from sidecar.config import LoadedConfig, load_config
from sidecar.errors import ConfigError
from sidecar.identity import (
    HostFacts,
    IdentityError,
    IdentityResult,
    SourceReport,
    resolve_identity,
    validate_node_id,
)
from tests.paths import EXAMPLE_INVENTORY

NO_FACTS = HostFacts(hostname="", addresses=())


class Host:
    """A fake machine under tmp_path: identity files, a config file, env and flags."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.node_id_file = tmp_path / "node-id"
        self.p2p_file = tmp_path / "ringrift-p2p"
        self.config_file = tmp_path / "ringside.yaml"
        self.env: dict[str, str] = {}
        self.flags: dict[str, object] = {}
        self.config_node_id: str | None = None
        self.inventory: Path | None = None
        self.facts = NO_FACTS

    def loaded(self) -> LoadedConfig:
        lines = [
            "identity:",
            f"  node_id_file: {self.node_id_file}",
            f"  p2p_defaults_file: {self.p2p_file}",
        ]
        if self.config_node_id is not None:
            lines.append(f"node_id: {self.config_node_id}")
        if self.inventory is not None:
            lines.append(f"inventory: {self.inventory}")
        self.config_file.write_text("\n".join(lines) + "\n")
        return load_config(self.config_file, self.env, self.flags)

    def resolve(self) -> IdentityResult:
        return resolve_identity(self.loaded(), self.env, self.facts)

    def fail(self) -> IdentityError:
        with pytest.raises(IdentityError) as caught:
            self.resolve()
        assert "\n" not in str(caught.value)
        return caught.value


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def outcomes(reports: tuple[SourceReport, ...]) -> list[str]:
    return [report.outcome for report in reports]


@pytest.mark.parametrize(
    "node_id", ["hetzner-cpu1", "a", "mac-studio", "vast-29118471", "x" * 63, "gpu-7", "h100"]
)
def test_valid_node_ids(node_id: str) -> None:
    assert validate_node_id(node_id) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2d9de0d97a72", "Docker container id"),
        ("0123456789ab" * 5 + "cdef", "Docker container id"),
        ("192-222-51-29", "IP address written with dashes"),
        ("ip-10-0-0-5", "IP address written with dashes"),
        ("ip-10-0-0-5.ec2.internal", "IP address written with dashes"),
        ("10.0.0.5", "an IP address"),
        ("localhost", "'localhost' names every machine"),
        ("localhost.localdomain", "'localhost' names every machine"),
        ("Hetzner-CPU1", "uppercase"),
        ("-gpu", "no '-' at either end"),
        ("gpu-", "no '-' at either end"),
        ("gpu_1", "only a-z, 0-9 and '-'"),
        ("node.example.com", "only a-z, 0-9 and '-'"),
        ("x" * 64, "the limit is 63"),
        ("", "empty"),
    ],
)
def test_rejected_node_ids(value: str, reason: str) -> None:
    problem = validate_node_id(value)
    assert problem is not None
    assert reason in problem


SOURCES = [
    "flag --node-id",
    "env RINGSIDE_NODE_ID",
    "env RINGRIFT_NODE_ID",
    "node-id file",
    "p2p defaults",
    "config node_id",
    "inventory",
    "hostname",
]


def offer(host: Host, source: str) -> str:
    """Make `source` offer a distinct inventory host name; return that name."""
    if source == "flag --node-id":
        host.flags["--node-id"] = "hetzner-cpu1"
        return "hetzner-cpu1"
    if source == "env RINGSIDE_NODE_ID":
        host.env["RINGSIDE_NODE_ID"] = "hetzner-cpu2"
        return "hetzner-cpu2"
    if source == "env RINGRIFT_NODE_ID":
        host.env["RINGRIFT_NODE_ID"] = "hetzner-cpu3"
        return "hetzner-cpu3"
    if source == "node-id file":
        host.node_id_file.write_text("nebius-h100-3\n")
        return "nebius-h100-3"
    if source == "p2p defaults":
        host.p2p_file.write_text("NODE_ID=vultr-a100-20gb\n")
        return "vultr-a100-20gb"
    if source == "config node_id":
        host.config_node_id = "mac-studio"
        return "mac-studio"
    if source == "inventory":
        host.facts = HostFacts(host.facts.hostname, ("10.1.2.3", "100.64.0.33"))
        return "lambda-gh200-3"
    host.facts = HostFacts("Worker-7.example.net", host.facts.addresses)
    host.flags["--allow-unknown-node"] = True  # the hostname is no inventory host
    return "worker-7"


@pytest.mark.parametrize("winner", range(len(SOURCES)), ids=SOURCES)
def test_each_source_wins_when_earlier_ones_are_absent(host: Host, winner: int) -> None:
    host.inventory = EXAMPLE_INVENTORY
    offered = [offer(host, source) for source in SOURCES[winner:]]
    result = host.resolve()
    assert result.node_id == offered[0]
    assert len(result.reports) == len(SOURCES)
    expected = ["not set"] * winner + ["chosen"]
    expected += ["skipped: an earlier source won"] * (len(SOURCES) - winner - 1)
    assert outcomes(result.reports) == expected
    assert [report.value for report in result.reports[winner:]] == offered
    assert result.source == result.reports[winner].source


def test_source_labels(host: Host) -> None:
    host.inventory = EXAMPLE_INVENTORY
    for source in SOURCES:
        offer(host, source)
    labels = [report.source for report in host.resolve().reports]
    assert labels == [
        "flag --node-id",
        "env RINGSIDE_NODE_ID",
        "env RINGRIFT_NODE_ID",
        f"file {host.node_id_file}",
        f"file {host.p2p_file} (NODE_ID)",
        f"config file {host.config_file} (node_id)",
        f"inventory {EXAMPLE_INVENTORY} (address 100.64.0.33 = tailscale_ip)",
        "hostname",
    ]


@pytest.mark.parametrize("source", SOURCES[:6])
def test_rejected_explicit_id_fails_without_falling_through(host: Host, source: str) -> None:
    index = SOURCES.index(source)
    for later_source in SOURCES[index + 1 :]:
        offer(host, later_source)
    offer(host, source)
    bad = "2d9de0d97a72"
    if source == "flag --node-id":
        host.flags["--node-id"] = bad
    elif source.startswith("env "):
        host.env[source.removeprefix("env ")] = bad
    elif source == "node-id file":
        host.node_id_file.write_text(bad + "\n")
    elif source == "p2p defaults":
        host.p2p_file.write_text(f"NODE_ID={bad}\n")
    else:
        host.config_node_id = bad
    error = host.fail()
    assert f"node id '{bad}' from {error.reports[index].source} is not usable" in str(error)
    assert "Docker container id" in str(error)
    assert error.reports[index].outcome.startswith("rejected: looks like a Docker container id")
    later = [report for report in error.reports[index + 1 :] if report.value is not None]
    assert len(later) == len(SOURCES) - index - 2  # every later source but the inventory
    for report in later:
        assert report.outcome == "skipped: an earlier explicit source was rejected"


def test_uppercase_explicit_id_is_rejected_not_lowercased(host: Host) -> None:
    host.env["RINGRIFT_NODE_ID"] = "Hetzner-CPU1"
    host.facts = HostFacts("worker-7", ())
    error = host.fail()
    assert "uppercase" in str(error)
    assert error.reports[-1] == SourceReport(
        "hostname", "worker-7", "skipped: an earlier explicit source was rejected"
    )


def test_hostname_is_first_label_lowercased(host: Host) -> None:
    host.facts = HostFacts("Worker-7.Example.COM", ())
    result = host.resolve()
    assert (result.node_id, result.source) == ("worker-7", "hostname")


@pytest.mark.parametrize(
    ("hostname", "reason"),
    [
        ("2d9de0d97a72", "Docker container id"),
        ("192-222-51-29", "dashes"),
        ("ip-10-0-0-5.ec2.internal", "dashes"),
        ("localhost", "localhost"),
    ],
)
def test_rejected_hostname_leaves_no_usable_id(host: Host, hostname: str, reason: str) -> None:
    host.facts = HostFacts(hostname, ())
    error = host.fail()
    assert str(error).startswith("no usable node id: pass --node-id, set RINGSIDE_NODE_ID")
    assert str(host.node_id_file) in str(error)
    assert error.reports[-1].outcome.startswith("rejected: ")
    assert reason in error.reports[-1].outcome


def test_container_hostname_falls_through_to_inventory_address(host: Host) -> None:
    host.inventory = EXAMPLE_INVENTORY
    host.facts = HostFacts("2d9de0d97a72", ("172.17.0.2", "100.64.0.40"))
    result = host.resolve()
    assert result.node_id == "vultr-a100-20gb"
    assert result.source == f"inventory {EXAMPLE_INVENTORY} (address 100.64.0.40 = tailscale_ip)"
    assert result.reports[-1] == SourceReport(
        "hostname", "2d9de0d97a72", "skipped: an earlier source won"
    )


def test_rejected_inventory_match_falls_through_to_hostname(host: Host, tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text("hosts:\n  Bad_Host: {tailscale_ip: 100.64.0.99}\n  gpu-1: {}\n")
    host.inventory = inventory
    host.facts = HostFacts("gpu-1", ("100.64.0.99",))
    # the hostname matches a host key, so the inventory source picks gpu-1 directly
    assert host.resolve().node_id == "gpu-1"
    host.facts = HostFacts("gpu-2", ("100.64.0.99",))
    host.flags["--allow-unknown-node"] = True
    result = host.resolve()
    assert result.node_id == "gpu-2"
    assert outcomes(result.reports)[-2].startswith("rejected: has uppercase letters")
    assert result.reports[-2].value == "Bad_Host"


@pytest.mark.parametrize(
    ("facts", "expected", "field"),
    [
        (HostFacts("hetzner-cpu1", ()), "hetzner-cpu1", "hostname hetzner-cpu1 = host key"),
        (HostFacts("hetzner-cpu1.example.net", ()), "hetzner-cpu1", "= host key"),
        (HostFacts("box", ("10.0.0.9", "203.0.113.22")), "hetzner-cpu2", "= ssh_host"),
        (HostFacts("box", ("100.64.0.13",)), "nebius-h100-3", "address 100.64.0.13 = tailscale_ip"),
    ],
)
def test_inventory_matching(host: Host, facts: HostFacts, expected: str, field: str) -> None:
    host.inventory = EXAMPLE_INVENTORY
    host.facts = facts
    result = host.resolve()
    assert result.node_id == expected
    assert result.source.startswith(f"inventory {EXAMPLE_INVENTORY} (")
    assert field in result.source


def test_explicit_id_not_in_inventory_is_refused(host: Host) -> None:
    host.inventory = EXAMPLE_INVENTORY
    host.env["RINGSIDE_NODE_ID"] = "gpu-new"
    host.facts = HostFacts("hetzner-cpu1", ())
    error = host.fail()
    assert str(error) == (
        f"node id 'gpu-new' from env RINGSIDE_NODE_ID is not a host in inventory "
        f"{EXAMPLE_INVENTORY}; fix it or pass --allow-unknown-node"
    )
    assert error.reports[1].outcome == "not in inventory"


def test_allow_unknown_node_accepts_explicit_id(host: Host) -> None:
    host.inventory = EXAMPLE_INVENTORY
    host.env["RINGSIDE_NODE_ID"] = "gpu-new"
    host.flags["--allow-unknown-node"] = True
    assert host.resolve().node_id == "gpu-new"


def test_unknown_hostname_is_skipped_and_fails_with_inventory_hint(host: Host) -> None:
    host.inventory = EXAMPLE_INVENTORY
    host.facts = HostFacts("gpu-new", ("10.9.9.9",))
    error = host.fail()
    assert error.reports[-1] == SourceReport("hostname", "gpu-new", "not in inventory")
    assert f"it must be a host in inventory {EXAMPLE_INVENTORY}" in str(error)
    host.flags["--allow-unknown-node"] = True
    assert host.resolve().node_id == "gpu-new"


def test_without_inventory_any_valid_explicit_id_is_accepted(host: Host) -> None:
    host.env["RINGRIFT_NODE_ID"] = "anything-goes"
    result = host.resolve()
    assert (result.node_id, result.source) == ("anything-goes", "env RINGRIFT_NODE_ID")
    assert result.reports[6] == SourceReport("inventory (none configured)", None, "not set")


def test_bad_inventory_file_is_a_config_error(host: Host, tmp_path: Path) -> None:
    host.inventory = tmp_path / "missing.yaml"
    host.env["RINGSIDE_NODE_ID"] = "gpu-1"
    with pytest.raises(ConfigError, match=r"^cannot read inventory .*missing\.yaml"):
        host.resolve()


def test_node_id_file_uses_first_non_empty_line(host: Host) -> None:
    host.node_id_file.write_text("\n   \n  gpu-3  \nother\n")
    assert host.resolve().node_id == "gpu-3"


def test_empty_node_id_file_counts_as_not_set(host: Host) -> None:
    host.node_id_file.write_text("\n\n")
    host.facts = HostFacts("worker-1", ())
    result = host.resolve()
    assert result.node_id == "worker-1"
    assert result.reports[3].outcome == "not set"


def test_unreadable_node_id_file_fails(host: Host) -> None:
    host.node_id_file.mkdir()
    host.facts = HostFacts("worker-1", ())
    error = host.fail()
    assert str(error) == (
        f"node id from file {host.node_id_file} is not usable: cannot read it: Is a directory"
    )


@pytest.mark.parametrize(
    "text",
    [
        "NODE_ID=gpu-5\n",
        "export NODE_ID=gpu-5\n",
        'NODE_ID="gpu-5"\n',
        "export NODE_ID='gpu-5'  # set by the installer\n",
        "NODE_ID=gpu-5 # trailing comment\n",
        "# NODE_ID=commented\nP2P_PORT=8770\nNODE_ID=gpu-5\n",
        "NODE_ID=first\nNODE_ID=gpu-5\n",
        "  NODE_ID=gpu-5\nNODE_ID_SUFFIX=x\n",
    ],
)
def test_p2p_defaults_file_parsing(host: Host, text: str) -> None:
    host.p2p_file.write_text(text)
    result = host.resolve()
    assert (result.node_id, result.source) == ("gpu-5", f"file {host.p2p_file} (NODE_ID)")


@pytest.mark.parametrize("text", ["", "P2P_PORT=8770\n", "NODE_ID=\n", "# NODE_ID=x\n"])
def test_p2p_defaults_without_node_id(host: Host, text: str) -> None:
    host.p2p_file.write_text(text)
    host.facts = HostFacts("worker-1", ())
    result = host.resolve()
    assert result.node_id == "worker-1"
    assert result.reports[4].outcome == "not set"


def test_empty_env_values_count_as_not_set(host: Host) -> None:
    host.env.update({"RINGSIDE_NODE_ID": "", "RINGRIFT_NODE_ID": "  "})
    host.facts = HostFacts("worker-1", ())
    result = host.resolve()
    assert result.node_id == "worker-1"
    assert outcomes(result.reports)[1:3] == ["not set", "not set"]


def test_config_node_id_from_env_is_reported_as_env_not_config(host: Host) -> None:
    host.env["RINGSIDE_NODE_ID"] = "gpu-9"
    result = host.resolve()
    assert result.source == "env RINGSIDE_NODE_ID"
    assert result.reports[5] == SourceReport(
        f"config file {host.config_file} (node_id)", None, "not set"
    )


def test_identity_error_is_a_config_error() -> None:
    assert issubclass(IdentityError, ConfigError)


def test_gather_lists_no_loopback_and_includes_tailscale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tailscale"
    fake.write_text("#!/bin/sh\necho 100.64.0.77\necho fd7a:115c:a1e0::77\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    facts = HostFacts.gather()
    assert facts.hostname
    assert "100.64.0.77" in facts.addresses
    assert "fd7a:115c:a1e0::77" in facts.addresses
    assert "127.0.0.1" not in facts.addresses
    assert "::1" not in facts.addresses
    assert len(set(facts.addresses)) == len(facts.addresses)


def test_gather_ignores_a_hanging_or_failing_tailscale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "tailscale"
    fake.write_text("#!/bin/sh\necho 100.64.0.78\nexec sleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    started = time.monotonic()
    facts = HostFacts.gather()
    assert time.monotonic() - started < 5
    assert "100.64.0.78" not in facts.addresses

    fake.write_text("#!/bin/sh\necho 100.64.0.79\nexit 1\n")
    assert "100.64.0.79" not in HostFacts.gather().addresses
