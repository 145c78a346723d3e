"""compose/node.yml on this host, as a node runs it: against a real etcd (three members on
loopback, TLS with client certificates, auth on by `ringside auth init`), with the node's two
secrets as files and nothing secret in the environment.

The sidecar uses the host's network, so it reaches the members on 127.0.0.1 and the
"orchestrator" (this test) reaches its API on 127.0.0.1 with the token from the host's file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
import yaml

from sidecar import __version__
from sidecar.testing.localcluster import LocalEtcdCluster, ServerTls, free_port
from tests.cli_support import clean_env
from tests.compose.cluster import SIDECAR_UID, owned_by_sidecar
from tests.guides import block, env_file_edits, ok, run_on_host
from tests.paths import ROOT
from tests.pki import make_ca, make_cert

pytestmark = [pytest.mark.compose, pytest.mark.timeout(300)]

NODE = "lambda-gh200-3"
CLUSTER = "composenode"
COMPOSE_FILE = ROOT / "compose" / "node.yml"
GUIDE = "compose/README.md"


class NodeHost:
    """The host folders node.yml mounts, and the compose project that uses them."""

    def __init__(self, base: Path, etcd: LocalEtcdCluster, tls: ServerTls, secrets: Path) -> None:
        self.port = free_port()
        self.operator_secrets = secrets
        self.config_dir = base / "etc-ringside"
        self.secrets = base / "secrets"
        for folder in (self.config_dir, self.secrets):
            folder.mkdir()
            owned_by_sidecar(folder, 0o700)
        for name, source in (
            ("etcd-ca.pem", tls.ca),
            ("etcd-client.pem", tls.client_cert),
            ("etcd-client-key.pem", tls.client_key),
        ):
            shutil.copy(source, self.config_dir / name)
            owned_by_sidecar(self.config_dir / name, 0o600)
        config = {
            "cluster": CLUSTER,
            "etcd": {
                "tls": {
                    "ca": "/etc/ringside/etcd-ca.pem",
                    "cert": "/etc/ringside/etcd-client.pem",
                    "key": "/etc/ringside/etcd-client-key.pem",
                }
            },
        }
        (self.config_dir / "ringside.yaml").write_text(yaml.safe_dump(config))
        # The node's own password from the operator's secrets folder, and an API token.
        shutil.copy(secrets / f"{NODE}.password", self.secrets / "etcd.password")
        self.token = "t0ken-for-the-orchestrator"
        (self.secrets / "http.token").write_text(self.token + "\n")
        for name in ("etcd.password", "http.token"):
            owned_by_sidecar(self.secrets / name, 0o600)
        self.env = {
            **os.environ,
            "RINGSIDE_IMAGE": os.environ.get("RINGSIDE_IMAGE", f"ringside:{__version__}"),
            "RINGSIDE_NODE_ID": NODE,
            "RINGSIDE_LEADER_ELIGIBLE": "true",
            "RINGSIDE_CLUSTER": CLUSTER,
            "RINGSIDE_LEASE_TTL": "5",
            "RINGSIDE_ETCD_ENDPOINTS": ",".join(etcd.client_urls),
            "RINGSIDE_HTTP_LISTEN": f"127.0.0.1:{self.port}",
            "HOST_RINGSIDE_DIR": str(self.config_dir),
            "RINGSIDE_CONFIG": "/etc/ringside/ringside.yaml",
            "RINGSIDE_SECRETS": str(self.secrets),
        }
        self.project = f"ringsidenode{os.getpid()}"

    def compose(self, *args: str) -> None:
        command = ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")

    def container(self) -> Any:
        client = docker.from_env()
        labels = [f"com.docker.compose.project={self.project}"]
        found = client.containers.list(all=True, filters={"label": labels})
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHost]:
    pki = tmp_path_factory.mktemp("node-pki")
    ca = make_ca(pki, "ca")
    server = make_cert(pki, ca, "server", "IP:127.0.0.1")
    client = make_cert(pki, ca, "client", "DNS:ringside", subject="/O=ringside")
    tls = ServerTls(ca[0], server[0], server[1], client[0], client[1])
    etcd = LocalEtcdCluster(tmp_path_factory.mktemp("node-etcd"), size=3, tls=tls)
    operator_secrets = tmp_path_factory.mktemp("operator") / "secrets"
    node_host: NodeHost | None = None
    try:
        etcd.start()
        operator = pki / "operator.yaml"
        files = {"ca": str(ca[0]), "cert": str(client[0]), "key": str(client[1])}
        operator.write_text(yaml.safe_dump({"etcd": {"tls": files}}))
        env = clean_env(
            RINGSIDE_CLUSTER=CLUSTER,
            RINGSIDE_ETCD_ENDPOINTS=",".join(etcd.client_urls),
            RINGSIDE_SECRETS_DIR=str(operator_secrets),
            RINGSIDE_CONFIG=str(operator),
        )
        done = subprocess.run(
            [sys.executable, "-m", "sidecar", "auth", "init", f"--eligible={NODE}",
             f"--node={NODE}", "--node=someone-else"],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        node_host = NodeHost(tmp_path_factory.mktemp("node-host"), etcd, tls, operator_secrets)
        node_host.compose("up", "-d", "--no-build")
        yield node_host
    finally:
        if node_host is not None:
            node_host.compose("down", "--volumes", "--timeout", "5")
        etcd.close()


async def wait_leading(session: aiohttp.ClientSession, url: str, within_s: float) -> Any:
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            async with session.get(url + "/v1/leader") as answer:
                last = await answer.json()
            if last.get("is_self") is True:
                return last
        except (aiohttp.ClientError, ValueError) as e:
            last = repr(e)
        await asyncio.sleep(0.2)
    pytest.fail(f"the node.yml sidecar did not lead within {within_s} s: {last}")


async def test_the_sidecar_joins_with_its_own_user_and_takes_the_token_from_its_file(
    host: NodeHost,
) -> None:
    url = f"http://127.0.0.1:{host.port}"
    async with aiohttp.ClientSession() as session:
        leader = await wait_leading(session, url, within_s=60)
        async with session.get(url + "/v1/status") as answer:
            status = await answer.json()
        assert [m["node_id"] for m in status["members"]] == [NODE]
        # The orchestrator on the host resigns with the token from the host's secret file.
        resign = url + "/v1/leader/resign"
        async with session.post(resign) as refused:
            assert refused.status == 401
        headers = {"Authorization": f"Bearer {host.token}"}
        async with session.post(resign, headers=headers) as accepted:
            assert accepted.status == 200, await accepted.text()
        again = await wait_leading(session, url, within_s=30)  # the only candidate: back
        assert again["epoch"] > leader["epoch"]


def test_the_container_is_unprivileged_and_its_secrets_never_in_the_environment(
    host: NodeHost,
) -> None:
    container = host.container()
    settings = container.attrs["HostConfig"]
    assert settings["ReadonlyRootfs"] is True
    assert settings["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in settings["SecurityOpt"]
    environment = "\n".join(container.attrs["Config"]["Env"])
    password = (host.secrets / "etcd.password").read_text().strip()
    assert password not in environment
    assert host.token not in environment
    exit_code, output = container.exec_run(["id", "-u"])
    assert (exit_code, output.strip()) == (0, str(SIDECAR_UID).encode())


def test_the_guide_block_runs_as_written(host: NodeHost, tmp_path: Path) -> None:
    """compose/README.md's block for a node, with the edits it asks for done by `sed`: this
    host's etcd, node id and folders. A second node, `someone-else`, beside the first."""
    where = tmp_path / "checkout"
    shutil.copytree(ROOT / "compose", where / "compose", ignore=shutil.ignore_patterns("state"))
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    owned_by_sidecar(secrets, 0o700)
    shutil.copy(host.operator_secrets / "someone-else.password", secrets / "etcd.password")
    (secrets / "http.token").write_text("another-token\n")
    for name in ("etcd.password", "http.token"):
        owned_by_sidecar(secrets / name, 0o600)
    edits = {
        "RINGSIDE_ETCD_ENDPOINTS": host.env["RINGSIDE_ETCD_ENDPOINTS"],
        "RINGSIDE_NODE_ID": "someone-else",
        "HOST_RINGSIDE_DIR": str(host.config_dir),
        "RINGSIDE_SECRETS": str(secrets),
        "RINGSIDE_CLUSTER": CLUSTER,
        "RINGSIDE_IMAGE": host.env["RINGSIDE_IMAGE"],
    }
    edit = env_file_edits("compose/node.env", edits)
    copy = "cp compose/node.env.example compose/node.env"
    script = block(GUIDE, "node", **{copy: f"{copy} && {edit}"})
    down = "docker-compose --env-file compose/node.env -f compose/node.yml down -t 5"
    try:
        shown = ok(run_on_host(script, where))
    finally:
        run_on_host(down, where)
    status, _ = json.JSONDecoder().raw_decode(shown)  # curl's answer, then `identity`
    assert status["node_id"] == "someone-else", shown
    assert "node id: someone-else" in shown, shown
