"""`ringside doctor`, each diagnosis provoked for real: certificates from another CA, a missing
client certificate, a name not in the SAN, a key that does not match, http and https crossed,
a wrong port, stopped members, another live node holding the id, and a clock skewed by a proxy
that rewrites etcd's `Date` header."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.keys import Keys
from sidecar.records import MemberRecord
from sidecar.testing.localcluster import LocalEtcdCluster, ServerTls, free_port
from tests.cli_support import clean_env
from tests.pki import make_ca, make_cert

CLUSTER = "doctored"


def doctor(
    tmp_path: Path, endpoints: list[str], *, etcd: dict[str, Any] | None = None, **env: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """`ringside doctor -o json` as node n1 with these endpoints; its answer and document."""
    config = tmp_path / "doctor.yaml"
    config.write_text(yaml.safe_dump({"etcd": {"endpoints": endpoints, **(etcd or {})}}))
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "doctor", "-o", "json"],
        capture_output=True,
        text=True,
        env=clean_env(
            RINGSIDE_CONFIG=str(config),
            RINGSIDE_CLUSTER=CLUSTER,
            RINGSIDE_NODE_ID="n1",
            RINGSIDE_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
            RINGSIDE_LOCK_FILE=str(tmp_path / "n1.lock"),
            **env,
        ),
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    document = json.loads(result.stdout) if result.stdout.startswith("{") else None
    return result, document


def findings(document: dict[str, Any] | None, title: str) -> list[tuple[str, str]]:
    """(level, text) of every finding in sections whose title starts with `title`."""
    assert document is not None
    return [
        (f["level"], f["text"])
        for s in document["sections"]
        if s["title"].startswith(title)
        for f in s["findings"]
    ]


def has(found: list[tuple[str, str]], level: str, pattern: str) -> bool:
    return any(lv == level and re.search(pattern, text) for lv, text in found)


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalEtcdCluster, Path]]:
    """One etcd member over TLS, client certificates required; and the PKI directory."""
    pki = tmp_path_factory.mktemp("pki-doctor")
    ca = make_ca(pki, "ca")
    server = make_cert(pki, ca, "server", "IP:127.0.0.1")
    client = make_cert(pki, ca, "client", "DNS:ringside", subject="/O=ringside")
    other_ca = make_ca(pki, "other-ca")
    make_cert(pki, other_ca, "stranger", "DNS:ringside", subject="/O=ringside")
    tls = ServerTls(ca[0], server[0], server[1], client[0], client[1])
    cluster = LocalEtcdCluster(Path(tmp_path_factory.mktemp("etcd-doctor")), size=1, tls=tls)
    try:
        cluster.start()
        yield cluster, pki
    finally:
        cluster.close()


def client_tls(
    pki: Path, *, ca: str = "ca", cert: str | None = "client", key: str | None = None
) -> dict[str, Any]:
    tls: dict[str, Any] = {"ca": str(pki / f"{ca}.pem")}
    if cert is not None:
        tls["cert"] = str(pki / f"{cert}.pem")
        tls["key"] = str(pki / f"{key or cert}.key")
    return {"tls": tls}


def test_a_node_that_can_join_is_told_so(etcd: LocalEtcdCluster, tmp_path: Path) -> None:
    result, document = doctor(tmp_path, etcd.client_urls)
    assert result.returncode == 0, result.stdout
    assert document is not None
    assert document["can_join"] is True
    assert has(findings(document, "configuration"), "ok", rf"read {re.escape(str(tmp_path))}")
    assert has(findings(document, "identity"), "ok", r"node id n1 \(from env RINGSIDE_NODE_ID\)")
    assert has(
        findings(document, "etcd quorum"), "ok", r"quorum: 3/3 voters healthy, Raft leader m\d"
    )
    assert has(
        findings(document, "etcd access"), "ok", rf"may write /ringside/{CLUSTER}/members/n1"
    )
    assert has(findings(document, "clock"), "ok", r"clock \d\.\d s")
    assert has(findings(document, "membership"), "ok", "no live member holds n1")
    table = subprocess.run(
        [sys.executable, "-m", "sidecar", "doctor", "--config", str(tmp_path / "doctor.yaml")],
        capture_output=True, text=True, check=False, timeout=60,
        env=clean_env(RINGSIDE_CLUSTER=CLUSTER, RINGSIDE_NODE_ID="n1",
                      RINGSIDE_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
                      RINGSIDE_LOCK_FILE=str(tmp_path / "n1.lock")),
    )  # fmt: skip
    assert table.returncode == 0, table.stdout
    assert table.stdout.splitlines()[-1] == "this node can join"


def test_a_wrong_port_and_http_to_a_tls_port_and_the_reverse(
    etcd: LocalEtcdCluster, tls_etcd: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    secure, pki = tls_etcd
    plain_port = etcd.client_urls[0].rsplit(":", 1)[1]
    tls_port = secure.client_urls[0].rsplit(":", 1)[1]
    refused = f"http://127.0.0.1:{free_port()}"
    crossed = [f"http://127.0.0.1:{tls_port}", f"https://127.0.0.1:{plain_port}", refused]
    result, document = doctor(tmp_path, crossed, etcd=client_tls(pki))
    assert result.returncode == 1
    assert has(
        findings(document, f"etcd endpoint http://127.0.0.1:{tls_port}"),
        "fail",
        "http:// to a port that speaks TLS",
    )
    assert has(
        findings(document, f"etcd endpoint https://127.0.0.1:{plain_port}"),
        "fail",
        "https:// to a port that speaks plain http",
    )
    assert has(
        findings(document, f"etcd endpoint {refused}"), "fail", "refused: nothing listens there"
    )
    assert has(findings(document, "etcd"), "fail", "no endpoint answered")

    # One good endpoint among them: the others only warn, the node can join.
    result, document = doctor(tmp_path, [*crossed, etcd.client_urls[0]])
    assert result.returncode == 0, result.stdout
    assert has(findings(document, f"etcd endpoint {refused}"), "warn", "refused")


@pytest.mark.parametrize(
    ("tls", "host", "pattern"),
    [
        ({"ca": "other-ca"}, "127.0.0.1", r"not signed by etcd\.tls\.ca \(.*another CA\)"),
        ({"cert": None}, "127.0.0.1", "requires a client certificate and this node sends none"),
        ({"cert": "stranger"}, "127.0.0.1", "refused this node's client certificate"),
        ({}, "localhost", "does not name localhost"),
    ],
    ids=[
        "server-from-another-ca",
        "no-client-cert",
        "client-cert-refused",
        "name-not-in-san",
    ],
)
def test_each_tls_problem_is_named(
    tls_etcd: tuple[LocalEtcdCluster, Path],
    tmp_path: Path,
    tls: dict[str, Any],
    host: str,
    pattern: str,
) -> None:
    secure, pki = tls_etcd
    port = secure.client_urls[0].rsplit(":", 1)[1]
    url = f"https://{host}:{port}"
    result, document = doctor(tmp_path, [url], etcd=client_tls(pki, **tls))
    assert result.returncode == 1, result.stdout
    found = findings(document, f"etcd endpoint {url}")
    assert has(found, "fail", pattern), found


def test_a_config_doctor_cannot_load_is_a_finding_too(
    tls_etcd: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    """A certificate and a key that do not belong together: the configuration is refused,
    and doctor says so in its first section (exit 1), not as a usage error."""
    secure, pki = tls_etcd
    mismatched = client_tls(pki, cert="client", key="server")
    result, document = doctor(tmp_path, secure.client_urls, etcd=mismatched)
    assert result.returncode == 1, result.stdout + result.stderr
    assert has(
        findings(document, "configuration"), "fail", "not a matching PEM certificate and key"
    )


def test_the_right_certificates_pass_and_show_the_days_left(
    tls_etcd: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    secure, pki = tls_etcd
    result, document = doctor(tmp_path, secure.client_urls, etcd=client_tls(pki))
    assert result.returncode == 0, result.stdout
    # The test certificates live 2 days: a warning, not a failure.
    assert has(
        findings(document, "etcd endpoint"), "warn", r"server certificate valid, [12] days left"
    )


@pytest.mark.etcd  # starts a cluster of its own
def test_stopped_members_mean_no_quorum(tmp_path: Path) -> None:
    with LocalEtcdCluster(tmp_path / "etcd", size=3) as cluster:
        for member in cluster.members[1:]:
            member.stop()
        result, document = doctor(tmp_path, cluster.client_urls)
    assert result.returncode == 1, result.stdout
    assert has(findings(document, "etcd quorum"), "fail", r"no quorum: .*[01]/3 voters healthy")
    assert not has(findings(document, "etcd quorum"), "ok", "quorum")  # one verdict, not two


async def test_another_live_node_holding_the_id_is_named(
    etcd: LocalEtcdCluster, tmp_path: Path
) -> None:
    store = etcd.client()
    try:
        lease = await store.lease_grant(30)
        record = MemberRecord(node_id="n1", hostname="vast-elsewhere", pid=4242, eligible=False)
        await store.put(Keys(CLUSTER).member("n1"), record.encode(), lease=lease.id)
        result, document = await asyncio.to_thread(doctor, tmp_path, etcd.client_urls)
        await store.lease_revoke(lease.id)
    finally:
        await store.close()
    assert result.returncode == 1, result.stdout
    assert has(
        findings(document, "membership"),
        "fail",
        r"n1 is held by a live sidecar on vast-elsewhere \(pid 4242\)",
    )


@contextlib.asynccontextmanager
async def date_rewriting_proxy(upstream_port: int, skew_s: float) -> AsyncIterator[int]:
    """A TCP proxy to etcd that moves the `Date` header of every answer by `skew_s`."""

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rewrite: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while chunk := await reader.read(65536):
                if rewrite:
                    fake = formatdate(time.time() + skew_s, usegmt=True).encode()
                    chunk = re.sub(rb"Date: [^\r\n]+", b"Date: " + fake, chunk)
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_skewed_clock_is_a_warning(etcd: LocalEtcdCluster, tmp_path: Path) -> None:
    port = int(etcd.client_urls[0].rsplit(":", 1)[1])
    async with date_rewriting_proxy(port, 5.0) as proxy:
        result, document = await asyncio.to_thread(doctor, tmp_path, [f"http://127.0.0.1:{proxy}"])
    assert result.returncode == 0, result.stdout  # a warning does not block joining
    assert has(findings(document, "clock"), "warn", r"clock [45]\.\d s behind etcd's")
