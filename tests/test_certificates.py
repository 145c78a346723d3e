"""Reading a certificate's end of validity without a crypto library (sidecar.certificates)."""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from sidecar.certificates import CertificateError, expiries, not_after
from sidecar.compat import UTC
from tests.pki import make_ca, make_cert


def openssl_end(path: Path) -> datetime:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-in", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    when = out.strip().removeprefix("notAfter=")
    return datetime.strptime(when, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def test_the_date_is_the_one_openssl_reads(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "ca")
    cert = make_cert(tmp_path, ca, "client", "DNS:client", subject="/O=ringside")
    for path in (ca[0], cert[0]):
        assert not_after(path) == openssl_end(path)
    assert expiries({"ca": ca[0], "client": cert[0], "none": None}) == {
        "ca": openssl_end(ca[0]),
        "client": openssl_end(cert[0]),
    }


@pytest.mark.parametrize(
    "text",
    ["", "hello\n", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
     "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"],
)  # fmt: skip
def test_anything_else_is_a_certificate_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "junk.pem"
    path.write_text(text)
    with pytest.raises(CertificateError):
        not_after(path)
    assert expiries({"client": path}) == {}
