"""compose/local-cluster.yml under test: the project, and its sidecars seen as a `Fleet`.

`ComposeProject` makes the project's files (`compose/local/setup.sh`: TLS material and the
secrets folder, in a state directory of its own), brings the project up and down with the
`docker-compose` command (1.29; the file is valid for `docker compose` v2 too) under a project
name of its own, and finds its containers, network and volumes with the Docker SDK by compose's
labels.

`ComposeFleet` gives `tests.fleet.InvariantChecker` and `wait_until_converged` what they use
(the `Observed` protocol): `sidecars` (objects with `node_id` and `running`), `running()` and
`async get(sidecar, path)`. Sidecars are asked on their container address on the project's
bridge network, from this host. A sidecar cut off from that network cannot be asked that way,
so while it is disconnected `get` asks it from inside its own container (`docker exec`): the
checker keeps seeing its claims, which is where a split brain would show.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest
from docker.models.containers import Container
from docker.models.networks import Network

from tests.fleet import POLL_TIMEOUT_S, fetch_json, wait_until_converged
from tests.paths import ROOT

SIDECAR_UID = 10001  # the image's `ringside` user


def owned_by_sidecar(path: Path, mode: int) -> None:
    """A host file or folder the sidecar's container reads, as the guides say to make it."""
    os.chown(path, SIDECAR_UID, SIDECAR_UID)
    path.chmod(mode)


COMPOSE_FILE = ROOT / "compose" / "local-cluster.yml"
SETUP = ROOT / "compose" / "local" / "setup.sh"
ELIGIBLE = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")
NODES = (*ELIGIBLE, "lambda-gh200-3", "vast-29118471")
ETCD_MEMBERS = ("etcd1", "etcd2", "etcd3")
API_PORT = 8776
COMPOSE_TIMEOUT_S = 180

# Runs inside a sidecar container: GET one path of its API on loopback, print the JSON body
# (error statuses included, as `Fleet.get` returns them).
_GET_INSIDE = f"""
import sys, urllib.error, urllib.request
url = "http://127.0.0.1:{API_PORT}" + sys.argv[1]
try:
    answer = urllib.request.urlopen(url, timeout={POLL_TIMEOUT_S})
except urllib.error.HTTPError as error:
    answer = error
sys.stdout.write(answer.read().decode())
"""


class ComposeProject:
    """One `docker-compose -p NAME -f compose/local-cluster.yml` project."""

    def __init__(self, name: str, variables: Mapping[str, str], state: Path) -> None:
        self.name = name
        self.state = state
        self.env = {**os.environ, **variables, "RINGSIDE_LOCAL_STATE": str(state)}
        self.client = docker.from_env()

    def setup(self) -> None:
        """compose/local/setup.sh: the files `up` needs, as a person trying ringside makes them."""
        done = subprocess.run(
            [str(SETUP)], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{SETUP} exited {done.returncode}:\n{done.stderr}")

    def etcd_client_tls(self) -> ssl.SSLContext:
        """TLS to the members from this host, with the sidecars' client certificate. Asked on
        their container addresses, which their certificates do not name: the CA is checked,
        the name is not."""
        files = self.state / "sidecar"
        context = ssl.create_default_context(cafile=files / "ca.pem")
        context.check_hostname = False
        context.load_cert_chain(files / "client-ringside.pem", files / "client-ringside-key.pem")
        return context

    def compose(self, *args: str) -> None:
        command = ["docker-compose", "-p", self.name, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")

    def up(self) -> None:
        self.compose("up", "-d", "--no-build")

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")

    def _labelled(self, **labels: str) -> list[str]:
        return [f"com.docker.compose.{key}={value}" for key, value in labels.items()]

    def container(self, service: str) -> Container:
        found = self.client.containers.list(
            all=True, filters={"label": self._labelled(project=self.name, service=service)}
        )
        assert len(found) == 1, f"{len(found)} containers for service {service}"
        return found[0]

    def network(self) -> Network:
        found = self.client.networks.list(filters={"label": self._labelled(project=self.name)})
        assert len(found) == 1, f"{len(found)} networks for project {self.name}"
        return found[0]

    def leftovers(self) -> dict[str, list[str]]:
        """Whatever of the project still exists, by compose label or by its name prefix."""
        label: dict[str, str | list[str] | bool] = {"label": self._labelled(project=self.name)}
        prefixes = (f"{self.name}_", f"{self.name}-")

        def names(found: Iterable[Any], *, by_prefix: bool = False) -> set[str]:
            named = {str(o.name) for o in found if o.name}
            return {n for n in named if n.startswith(prefixes)} if by_prefix else named

        client = self.client
        found = {
            "containers": names(client.containers.list(all=True, filters=label))
            | names(client.containers.list(all=True), by_prefix=True),
            "networks": names(client.networks.list(filters=label))
            | names(client.networks.list(), by_prefix=True),
            "volumes": names(client.volumes.list(filters=label))
            | names(client.volumes.list(), by_prefix=True),
        }
        return {kind: sorted(found[kind]) for kind in found if found[kind]}


@dataclass
class ContainerSidecar:
    """One sidecar service of the project, as `tests.fleet.Sidecar` is one process."""

    node_id: str
    container: Container
    address: str = ""
    running: bool = True
    connected: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.address}:{API_PORT}"


class ComposeFleet:
    """The project's sidecars behind `Fleet`'s interface, and the failures tests inflict."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.network = project.network()
        self.sidecars = {node: ContainerSidecar(node, project.container(node)) for node in NODES}
        self._session: aiohttp.ClientSession | None = None

    # --- what InvariantChecker and wait_converged use ------------------------------------------

    def running(self) -> list[ContainerSidecar]:
        """Sidecars that run and can be asked over the network."""
        return [s for s in self.sidecars.values() if s.running and s.connected]

    async def get(self, sidecar: ContainerSidecar, path: str) -> dict[str, Any] | None:
        """One GET to a sidecar's API; None when it does not answer in time."""
        if not sidecar.connected:
            return await asyncio.to_thread(self._get_inside, sidecar, path)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await fetch_json(self._session, sidecar.url + path)

    def _get_inside(self, sidecar: ContainerSidecar, path: str) -> dict[str, Any] | None:
        try:
            exit_code, output = sidecar.container.exec_run(["python3", "-c", _GET_INSIDE, path])
            if exit_code != 0 or not isinstance(output, bytes):
                return None
            document: dict[str, Any] = json.loads(output)
        except (docker.errors.APIError, ValueError):
            return None
        return document

    async def wait_converged(
        self, members: Iterable[str], *, within_s: float, leader_among: Iterable[str] | None = None
    ) -> dict[str, Any]:
        return await wait_until_converged(
            self, members, within_s=within_s, leader_among=leader_among
        )

    # --- failures --------------------------------------------------------------------------------

    async def kill(self, sidecar: ContainerSidecar) -> None:
        sidecar.running = False
        await asyncio.to_thread(sidecar.container.kill)

    async def stop(self, sidecar: ContainerSidecar, *, grace_s: int = 10) -> None:
        """`docker stop`: SIGTERM, then SIGKILL after `grace_s`."""
        sidecar.running = False
        await asyncio.to_thread(sidecar.container.stop, timeout=grace_s)
        await asyncio.to_thread(sidecar.container.reload)

    async def start(self, sidecar: ContainerSidecar) -> None:
        await asyncio.to_thread(sidecar.container.start)
        await self._refresh(sidecar)
        sidecar.running = True

    async def disconnect(self, sidecar: ContainerSidecar) -> None:
        sidecar.connected = False
        await asyncio.to_thread(self.network.disconnect, sidecar.container)

    async def connect(self, sidecar: ContainerSidecar) -> None:
        await asyncio.to_thread(self.network.connect, sidecar.container, aliases=[sidecar.node_id])
        await self._refresh(sidecar)
        sidecar.connected = True

    async def kill_etcd(self, member: str) -> None:
        await asyncio.to_thread(self.project.container(member).kill)

    async def start_etcd(self, member: str) -> None:
        await asyncio.to_thread(self.project.container(member).start)

    async def heal(self) -> None:
        """Every etcd member and sidecar running and on the network, whatever a test left."""
        for member in ETCD_MEMBERS:
            container = self.project.container(member)
            if container.status != "running":
                await asyncio.to_thread(container.start)
        for sidecar in self.sidecars.values():
            container = sidecar.container
            await asyncio.to_thread(container.reload)
            if self.network.name not in container.attrs["NetworkSettings"]["Networks"]:
                await asyncio.to_thread(self.network.connect, container, aliases=[sidecar.node_id])
            if container.status != "running":
                await asyncio.to_thread(container.start)
            await self._refresh(sidecar)
            sidecar.running = sidecar.connected = True

    async def _refresh(self, sidecar: ContainerSidecar) -> None:
        await asyncio.to_thread(sidecar.container.reload)
        networks = sidecar.container.attrs["NetworkSettings"]["Networks"]
        sidecar.address = networks.get(self.network.name, {}).get("IPAddress", "")

    # --- what the sidecars and etcd say ----------------------------------------------------------

    async def wait_ready(self, *, within_s: float) -> None:
        """Every sidecar answers /ready with 200 (registered, in sync, a leader known)."""
        deadline = time.monotonic() + within_s
        answers: list[dict[str, Any] | None] = []
        while time.monotonic() < deadline:
            answers = [await self.get(s, "/ready") for s in self.running()]
            if all(a is not None and a.get("ready") is True for a in answers):
                return
            await asyncio.sleep(0.2)
        pytest.fail(f"not every sidecar ready within {within_s} s: {answers}")

    async def wait_all(
        self, sidecars: Iterable[ContainerSidecar], path: str, what: str, *, within_s: float,
        check: Any,
    ) -> None:  # fmt: skip
        """Wait until `check(answer)` holds for every one of `sidecars` asked `path`."""
        chosen = list(sidecars)
        deadline = time.monotonic() + within_s
        answers: list[dict[str, Any] | None] = []
        while time.monotonic() < deadline:
            answers = [await self.get(s, path) for s in chosen]
            if all(a is not None and check(a) for a in answers):
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"{what}: not within {within_s} s; last answers {answers}")

    async def etcd_raft_leader(self) -> str:
        """The etcd member (service name) that leads Raft, asked on each member's client port."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        names: dict[str, str] = {}
        leaders: set[str] = set()
        for member in ETCD_MEMBERS:
            container = await asyncio.to_thread(self.project.container, member)
            address = container.attrs["NetworkSettings"]["Networks"][self.network.name]
            url = f"https://{address['IPAddress']}:2379/v3/maintenance/status"
            async with self._session.post(
                url, json={}, ssl=self.project.etcd_client_tls(), timeout=aiohttp.ClientTimeout(2)
            ) as r:
                status = await r.json()
            names[status["header"]["member_id"]] = member
            leaders.add(status["leader"])
        assert len(leaders) == 1, f"etcd members disagree on their leader: {leaders}"
        return names[leaders.pop()]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
