"""TLS to etcd: server verified against our CA, client certificate required by the member.

The certificates are made here with the `openssl` command (a CA, a server certificate for
127.0.0.1, a client certificate), and a one-member etcd serves clients over https only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sidecar.store.errors import StoreUnavailable
from sidecar.store.gateway import TlsFiles
from sidecar.testing.localcluster import LocalEtcdCluster, ServerTls
from tests.cli_support import ringside
from tests.pki import make_ca, make_cert
from tests.reads import get_one

pytestmark = pytest.mark.etcd  # these tests start etcd clusters of their own


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    server = make_cert(directory, ca, "server", "IP:127.0.0.1")
    client = make_cert(directory, ca, "client", "DNS:ringside-client")
    other_ca = make_ca(directory, "other-ca")
    return {
        "ca": ca[0],
        "server_cert": server[0],
        "server_key": server[1],
        "client_cert": client[0],
        "client_key": client[1],
        "other_ca": other_ca[0],
    }


@pytest.fixture(scope="module")
def tls_etcd(
    pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalEtcdCluster]:
    tls = ServerTls(
        pki["ca"], pki["server_cert"], pki["server_key"], pki["client_cert"], pki["client_key"]
    )
    with LocalEtcdCluster(tmp_path_factory.mktemp("etcd-tls"), size=1, tls=tls) as cluster:
        yield cluster


async def test_client_certificate_over_https_works(tls_etcd: LocalEtcdCluster) -> None:
    assert tls_etcd.client_urls[0].startswith("https://")
    store = tls_etcd.client()
    try:
        await store.put("/tls/k", b"secret")
        kv = await get_one(store, "/tls/k")
        assert kv is not None
        assert kv.value == b"secret"
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("files", "complaint"),
    [
        ("no client certificate", "(?i)bad certificate|handshake|certificate required"),
        ("a CA that did not sign the server", "(?i)certificate verify failed"),
    ],
)
async def test_wrong_tls_material_is_refused(
    tls_etcd: LocalEtcdCluster, pki: dict[str, Path], files: str, complaint: str
) -> None:
    tls = (
        TlsFiles(ca=pki["ca"])
        if files == "no client certificate"
        else TlsFiles(ca=pki["other_ca"], cert=pki["client_cert"], key=pki["client_key"])
    )
    store = tls_etcd.client(tls=tls)
    try:
        with pytest.raises(StoreUnavailable, match=complaint):
            await store.get("/tls/k")
    finally:
        await store.close()


async def test_ringside_etcd_shows_when_the_certificates_expire(
    tls_etcd: LocalEtcdCluster, pki: dict[str, Path], tmp_path: Path
) -> None:
    """The test certificates live two days: `ringside etcd` says so, and warns."""
    config = tmp_path / "ringside.yaml"
    tls = {"ca": str(pki["ca"]), "cert": str(pki["client_cert"]), "key": str(pki["client_key"])}
    config.write_text(yaml.safe_dump({"etcd": {"tls": tls}}))
    env = {"RINGSIDE_CONFIG": str(config), "RINGSIDE_ETCD_ENDPOINTS": tls_etcd.client_urls[0]}
    shown = await ringside("etcd", "--json", **env)
    assert shown.returncode == 0, shown.stderr
    found = {c["certificate"]: c for c in json.loads(shown.stdout)["certificates"]}
    assert set(found) == {"ca", "client"}
    assert all(1.9 < c["days_left"] <= 2.0 for c in found.values()), found
    text = await ringside("etcd", **env)
    assert "tls: client certificate expires" in text.stdout
    assert "WARNING: renew it" in text.stdout
