"""The two etcd setups the `security` section compares: plain, and the production one.

- **plain**: three members on loopback over HTTP, auth off (what every other section uses).
- **TLS + auth**: the same three members serving clients over TLS only and requiring a client
  certificate signed by the cluster's CA (`--client-cert-auth`), with etcd auth enabled and one
  etcd user and role per node, made by `Access` (`sidecar/cli/etcd_access.py`, what
  `ringside auth init` runs): a node reads its cluster's prefix and writes its own two keys.
  The client certificate carries no CN (`/O=ringside`): with auth on, etcd 3.4 would take a CN
  as the user name, and its HTTP gateway answers 400.

The bench's own clients (the floors, the 1,000 simulated sessions) log in as one non-root user,
`ringside-bench`, whose role has a node's shape at a wider range: READ on the scale cluster's
prefix, READWRITE on its member keys and probe keys, READWRITE on the floor keys. Not root:
etcd skips the permission check for the root role, so root would hide part of the cost.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sidecars import EligibleNodes, FleetAccess
from sidecar.cli.etcd_access import Access, Permission, generate_password
from sidecar.files import write_private
from sidecar.keys import Keys
from sidecar.store.etcd import EtcdStore
from sidecar.store.gateway import TlsFiles
from sidecar.store.model import prefix_end
from sidecar.testing.localcluster import LocalEtcdCluster, ServerTls
from tests.pki import make_ca, make_cert

BENCH_USER = "ringside-bench"
FLOOR_PREFIX = "/bench/floor/"  # where bench/floors.py writes
SCALE_KEYS = Keys("bench-security-scale")  # the simulated members of the scale row


@dataclass
class Setup:
    """One etcd cluster and how every client of the bench reaches it."""

    label: str
    etcd: LocalEtcdCluster
    tls: TlsFiles | None = None
    password: str | None = None  # of BENCH_USER; None: auth is off
    secrets: Path | None = None  # the nodes' password files
    # ringside clusters whose nodes have etcd users: cluster -> node id -> user name
    users: dict[str, dict[str, str]] = field(default_factory=dict)

    def connect(self, urls: list[str], *, request_timeout: float = 1.5) -> EtcdStore:
        """A client of the bench's own: with this setup's TLS files and credentials."""
        user = BENCH_USER if self.password is not None else None
        return EtcdStore.connect(
            urls,
            request_timeout=request_timeout,
            tls=self.tls,
            username=user,
            password=self.password,
        )

    def fleet_access(self, chunk: int) -> FleetAccess | None:
        """How the `chunk`-th fleet's sidecars reach etcd (None: plain, the fleet's defaults).
        Each fleet gets a cluster name of its own: the one before was killed with kill -9 and
        its keys outlive it by a TTL."""
        if self.secrets is None:
            return None
        cluster = list(self.users)[chunk]
        users, secrets, tls = self.users[cluster], self.secrets, self.tls

        def settings(node_id: str) -> dict[str, Any]:
            etcd: dict[str, Any] = {
                "username": users[node_id],
                "password_file": str(secrets / f"{node_id}.password"),
            }
            if tls is not None:
                etcd["tls"] = {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}
            return {"etcd": etcd}

        return FleetAccess(cluster, settings)


@contextlib.asynccontextmanager
async def plain(workdir: Path) -> AsyncIterator[Setup]:
    with LocalEtcdCluster(workdir / "etcd-plain") as etcd:
        yield Setup("plain", etcd)


@contextlib.asynccontextmanager
async def secure(workdir: Path, fleets: int) -> AsyncIterator[Setup]:
    """The TLS + auth cluster, with users for the nodes of `fleets` fleets and the bench."""
    tls = _pki(workdir / "pki")
    with LocalEtcdCluster(workdir / "etcd-secure", tls=tls) as etcd:
        secrets = workdir / "secrets"
        secrets.mkdir(mode=0o700)
        setup = Setup(
            "TLS + auth",
            etcd,
            tls=tls.client_files,
            password=generate_password(),
            secrets=secrets,
        )
        clusters = [f"bench-secure-{uuid.uuid4().hex[:6]}" for _ in range(fleets)]
        await _enable_auth(setup, clusters)
        yield setup


def _pki(directory: Path) -> ServerTls:
    directory.mkdir()
    ca = make_ca(directory, "ca")
    server = make_cert(directory, ca, "server", "IP:127.0.0.1")
    client = make_cert(directory, ca, "client", "DNS:ringside", subject="/O=ringside")
    return ServerTls(ca[0], server[0], server[1], client[0], client[1])


def _range(prefix: str, kind: str) -> Permission:
    return Permission(kind, prefix, prefix_end(prefix).decode())


async def _enable_auth(setup: Setup, clusters: list[str]) -> None:
    """Root, one user per node of every fleet (one password file per node id: the fleets
    share node ids), the bench's user; then auth on. Over TLS, before auth: no login yet."""
    assert setup.secrets is not None
    assert setup.password is not None
    store = setup.etcd.client()
    try:
        await Access(store.gateway, Keys("-")).ensure_root(generate_password())
        passwords = {node: generate_password() for node in EligibleNodes}
        for node, password in passwords.items():
            write_private(setup.secrets / f"{node}.password", password)
        for cluster in clusters:
            access = Access(store.gateway, Keys(cluster))
            for node, password in passwords.items():
                await access.ensure_node(node, eligible=True, password=password)
            setup.users[cluster] = {node: access.user_of(node) for node in passwords}
        await _ensure_user(
            store,
            BENCH_USER,
            setup.password,
            [
                _range(SCALE_KEYS.prefix, "READ"),
                _range(SCALE_KEYS.members, "READWRITE"),
                _range(SCALE_KEYS.prefix + "probe/", "READWRITE"),
                _range(FLOOR_PREFIX, "READWRITE"),
            ],
        )
        await Access(store.gateway, Keys("-")).enable()
    finally:
        await store.close()


async def _ensure_user(
    store: EtcdStore, name: str, password: str, permissions: list[Permission]
) -> None:
    """A user with a role of its own name holding exactly `permissions` (a fresh etcd)."""
    call = store.gateway.call
    await call("/v3/auth/user/add", {"name": name, "password": password})
    await call("/v3/auth/role/add", {"name": name})
    for permission in permissions:
        await call("/v3/auth/role/grant", {"name": name, "perm": permission.document()})
    await call("/v3/auth/user/grant", {"user": name, "role": name})
