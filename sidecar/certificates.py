"""When a PEM certificate expires, read with the standard library only.

Operators learn that a certificate expired when etcd stops answering; ringside says it weeks
before: `ringside etcd` prints the days left of the configured CA and client certificate, and
`ringside_tls_expiry_timestamp_seconds` lets an alert fire in time. The `ssl` module exposes a
certificate's dates only for CA certificates or a live peer, so the validity is read from the
DER structure itself: Certificate -> tbsCertificate -> validity -> notAfter.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from pathlib import Path

from sidecar.compat import UTC
from sidecar.files import read_text

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_SEQUENCE, _CONTEXT_0, _UTC_TIME, _GENERALIZED_TIME = 0x30, 0xA0, 0x17, 0x18


class CertificateError(ValueError):
    """Not a PEM certificate whose validity can be read."""


def not_after(path: Path) -> datetime:
    """The end of validity of the first certificate in the PEM file `path` (UTC)."""
    try:
        text = read_text(path, limit=1024 * 1024)
    except (OSError, UnicodeDecodeError) as e:
        raise CertificateError(f"cannot read {path}: {e}") from None
    found = _PEM.search(text)
    if found is None:
        raise CertificateError(f"{path} holds no PEM certificate")
    try:
        der = base64.b64decode("".join(found.group(1).split()), validate=True)
        return _validity_end(der)
    except (ValueError, IndexError) as e:
        raise CertificateError(f"{path}: not a readable X.509 certificate ({e})") from None


def _tlv(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `at`."""
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise ValueError("truncated")
    return tag, start, end


def _validity_end(der: bytes) -> datetime:
    tag, certificate, _ = _tlv(der, 0)
    tag_tbs, tbs, _ = _tlv(der, certificate)
    if tag != _SEQUENCE or tag_tbs != _SEQUENCE:
        raise ValueError("no certificate sequence")
    at = tbs
    tag, _, end = _tlv(der, at)
    if tag == _CONTEXT_0:  # [0] version, present for v2 and v3
        at = end
    for _ in range(3):  # serialNumber, signature algorithm, issuer
        at = _tlv(der, at)[2]
    tag, validity, _ = _tlv(der, at)
    if tag != _SEQUENCE:
        raise ValueError("no validity sequence")
    after = _tlv(der, validity)[2]  # skip notBefore
    tag, start, end = _tlv(der, after)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ: years 50-99 are 19xx (RFC 5280)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"unexpected time tag {tag:#x}")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)


def days_left(path: Path, now: datetime | None = None) -> float:
    """Days until the certificate in `path` expires (negative once it has)."""
    moment = now or datetime.now(UTC)
    return (not_after(path) - moment).total_seconds() / 86400


def expiries(files: dict[str, Path | None]) -> dict[str, datetime]:
    """The end of validity of each named file that is set and readable (`role -> date`);
    an unreadable one is left out: `config --check` already refused it at load time."""
    found: dict[str, datetime] = {}
    for role, path in files.items():
        if path is None:
            continue
        try:
            found[role] = not_after(path)
        except CertificateError:
            continue
    return found
