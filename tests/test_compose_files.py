"""compose/: what the files promise, checked without Docker (`make test-compose` runs them).

Pinned images whose default ringside tag is this version; host networking and a restart policy
on real hosts; only variables ringside reads handed to the sidecar; every `${VAR}` the files use
documented in compose/README.md.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from sidecar import __version__
from sidecar.config import CONFIG_ENV, ENV_FIELDS
from tests.paths import ROOT

COMPOSE = ROOT / "compose"
FILES = ("voter.yml", "node.yml", "local-cluster.yml")


def services(name: str) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((COMPOSE / name).read_text())
    assert document["version"] == "2.4"  # read alike by docker-compose 1.29 and docker compose
    found: dict[str, dict[str, Any]] = document["services"]
    return found


def is_sidecar(service: dict[str, Any]) -> bool:
    return "RINGSIDE_IMAGE" in service["image"] and service["command"] == ["run"]


@pytest.mark.parametrize("name", FILES)
def test_images_are_pinned_and_ringside_is_this_version(name: str) -> None:
    for service in services(name).values():
        image = service["image"]
        assert image in (
            "${ETCD_IMAGE:-quay.io/coreos/etcd:v3.5.33}",
            f"${{RINGSIDE_IMAGE:-ringside:{__version__}}}",
        ), image


@pytest.mark.parametrize("name", ["voter.yml", "node.yml"])
def test_real_hosts_use_the_host_network_and_restart(name: str) -> None:
    for service in services(name).values():
        assert service["network_mode"] == "host"
        assert service["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", FILES)
def test_sidecars_get_only_variables_ringside_reads(name: str) -> None:
    sidecars = list(filter(is_sidecar, services(name).values()))
    assert sidecars
    for service in sidecars:
        names = set(service["environment"])
        assert names <= set(ENV_FIELDS) | {CONFIG_ENV}, names - set(ENV_FIELDS)


def test_local_cluster_sidecars_are_reachable_on_their_network() -> None:
    sidecars = {n: s for n, s in services("local-cluster.yml").items() if is_sidecar(s)}
    assert len(sidecars) >= 4
    eligible = {
        n for n, s in sidecars.items() if s["environment"]["RINGSIDE_LEADER_ELIGIBLE"] == "true"
    }
    assert eligible == {"hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3"}
    for name, service in sidecars.items():
        assert service["environment"]["RINGSIDE_NODE_ID"] == name
        assert service["environment"]["RINGSIDE_HTTP_LISTEN"] == "0.0.0.0:8776"


def test_every_compose_variable_is_documented() -> None:
    readme = (COMPOSE / "README.md").read_text()
    for name in (*FILES, "voter.env.example", "node.env.example"):
        text = (COMPOSE / name).read_text()
        used = set(re.findall(r"\$\{([A-Z_]+)", text)) | set(
            re.findall(r"^([A-Z_]+)=", text, re.MULTILINE)
        )
        missing = {variable for variable in used if f"`{variable}`" not in readme}
        assert not missing, f"{name}: not in compose/README.md: {sorted(missing)}"


@pytest.mark.parametrize("name", FILES)
def test_every_container_is_unprivileged_on_a_read_only_root(name: str) -> None:
    for service_name, service in services(name).items():
        assert service["read_only"] is True, service_name
        assert service["cap_drop"] == ["ALL"], service_name
        assert service["security_opt"] == ["no-new-privileges:true"], service_name
        assert "user" not in service, service_name  # the image's: uid 10001, or etcd's root


@pytest.mark.parametrize("name", FILES)
def test_sidecars_get_their_own_password_as_a_file_never_in_the_environment(name: str) -> None:
    document = yaml.safe_load((COMPOSE / name).read_text())
    for service in filter(is_sidecar, document["services"].values()):
        environment = service["environment"]
        assert environment["RINGSIDE_ETCD_PASSWORD_FILE"] == "/run/secrets/etcd.password"
        assert "RINGSIDE_ETCD_PASSWORD" not in environment
        assert "RINGSIDE_HTTP_TOKEN" not in environment
        targets = {secret["target"]: secret["source"] for secret in service["secrets"]}
        assert "etcd.password" in targets
        assert document["secrets"][targets["etcd.password"]]["file"].endswith(".password")
        assert any(path.startswith("/run/ringside:") for path in service["tmpfs"])


@pytest.mark.parametrize("name", ["voter.yml", "node.yml"])
def test_real_hosts_pass_the_api_token_as_a_file(name: str) -> None:
    for service in filter(is_sidecar, services(name).values()):
        assert service["environment"]["RINGSIDE_HTTP_TOKEN_FILE"] == "/run/secrets/http.token"
        assert {"source": "http-token", "target": "http.token"} in service["secrets"]


@pytest.mark.parametrize("name", ["node.env.example", "voter.env.example"])
def test_the_env_examples_name_no_node(name: str) -> None:
    """Copied to twenty nodes as shipped, a filled-in node id would be twenty claims to one
    name: the examples leave it empty (the host's /etc/ringrift/node-id decides)."""
    values = dict(
        line.split("=", 1)
        for line in (COMPOSE / name).read_text().splitlines()
        if re.match(r"^[A-Z_]+=", line)
    )
    assert values.get("RINGSIDE_NODE_ID", "") == ""
