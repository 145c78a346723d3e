"""One etcd endpoint, taken apart layer by layer for `ringside doctor`: name, TCP, TLS, HTTP.

A client library reports a failed connection as one exception whose text names the layer it
broke in, in its own words ("[SSL: WRONG_VERSION_NUMBER]", "Cannot connect to host"). An
operator needs the cause and the setting to change. So each layer is tried on its own, with
the standard library, and each failure is turned into one sentence and a fix:

- the name does not resolve; nothing listens (refused); nothing answers (dropped: a firewall);
- `https://` to a plain port, or `http://` to a TLS port;
- the server certificate from another CA, without this name in its SAN, or expired; days left;
- a client certificate required and missing, or refused; `etcd.tls.cert` and `key` that do
  not belong together;
- and, once etcd answers `GET /version`, its version and the clock skew against its `Date`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Literal
from urllib.parse import urlsplit

from sidecar.asyncio_compat import timeout
from sidecar.compat import UTC
from sidecar.settings import TlsSettings

Level = Literal["ok", "warn", "fail"]
TIMEOUT_S = 3.0
SKEW_WARN_S = 1.0
DAYS_WARN = 30

# OpenSSL's verify codes (X509_V_ERR_*) for a server certificate this client cannot trust.
_UNTRUSTED = {2, 18, 19, 20, 21, 27}
_EXPIRED, _NOT_YET_VALID, _HOSTNAME = 10, 9, 62


@dataclass(frozen=True)
class Finding:
    """One thing `ringside doctor` found: how bad, what, and what to change."""

    level: Level
    text: str
    fix: str = ""


@dataclass
class EndpointProbe:
    """What one endpoint said, layer by layer; `reached` once etcd answered over HTTP."""

    url: str
    findings: list[Finding] = field(default_factory=list)
    version: str | None = None
    skew_s: float | None = None  # etcd's clock minus ours, from its Date header

    @property
    def reached(self) -> bool:
        return self.version is not None

    def add(self, level: Level, text: str, fix: str = "") -> None:
        self.findings.append(Finding(level, text, fix))

    def answered(self, version: str, skew_s: float | None) -> None:
        """etcd answered GET /version: its version, and its clock against ours."""
        self.version, self.skew_s = version, skew_s
        self.add("ok", f"etcd {version} answers")


async def probe(
    url: str, tls: TlsSettings | None, *, timeout_s: float = TIMEOUT_S
) -> EndpointProbe:
    """Take `url` apart layer by layer; stops at the first layer that fails."""
    found = EndpointProbe(url)
    parts = urlsplit(url)
    host, secure = parts.hostname or "", parts.scheme == "https"
    port = parts.port or 2379
    loop = asyncio.get_running_loop()
    try:
        async with timeout(timeout_s):
            addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, asyncio.TimeoutError) as e:
        found.add(
            "fail", f"{host} does not resolve ({_why(e)})", "check the name in etcd.endpoints"
        )
        return found
    address = str(addresses[0][4][0])
    try:
        async with timeout(timeout_s):
            _, writer = await asyncio.open_connection(address, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    except ConnectionRefusedError:
        found.add(
            "fail",
            f"connection to {address}:{port} refused: nothing listens there",
            "is etcd running on that host, and is the port right (2379 by default)?",
        )
        return found
    except (OSError, asyncio.TimeoutError) as e:
        found.add(
            "fail",
            f"no answer from {address}:{port} within {timeout_s:g} s ({_why(e)})",
            "a firewall drops the packets, or the address is wrong",
        )
        return found
    context = _context(found, tls) if secure else None
    if secure and context is None:
        return found
    sent_cert = tls is not None and tls.cert is not None
    await _http_version(
        found, host, address, port, context=context, sent_cert=sent_cert, timeout_s=timeout_s
    )
    return found


def _context(found: EndpointProbe, tls: TlsSettings | None) -> ssl.SSLContext | None:
    """The client's TLS context from `etcd.tls`, or None (a finding says why) when its files
    cannot be used."""
    try:
        context = ssl.create_default_context(cafile=str(tls.ca) if tls and tls.ca else None)
    except (OSError, ssl.SSLError) as e:
        found.add(
            "fail", f"cannot read etcd.tls.ca: {_why(e)}", "point etcd.tls.ca at the CA's PEM"
        )
        return None
    if tls is not None and tls.cert is not None and tls.key is not None:
        try:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        except ssl.SSLError as e:
            if "KEY_VALUES_MISMATCH" in str(e) or "key values mismatch" in str(e):
                found.add(
                    "fail",
                    "etcd.tls.cert and etcd.tls.key do not belong together",
                    "use the key made with that certificate (etcd/gen-tls.sh makes pairs)",
                )
            else:
                found.add("fail", f"cannot use etcd.tls.cert / key: {_why(e)}")
            return None
        except OSError as e:
            found.add("fail", f"cannot read etcd.tls.cert / key: {_why(e)}")
            return None
    return context


async def _http_version(
    found: EndpointProbe,
    host: str,
    address: str,
    port: int,
    *,
    context: ssl.SSLContext | None,
    sent_cert: bool,
    timeout_s: float,
) -> None:
    """GET /version over a connection of our own: the TLS verdicts, then etcd's answer."""
    try:
        async with timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                address, port, ssl=context, server_hostname=host if context else None
            )
    except ssl.SSLCertVerificationError as e:
        found.add(*_untrusted(e, host))
        return
    except (OSError, asyncio.TimeoutError) as e:  # ssl.SSLError included
        if context is not None and await _speaks_plain_http(address, port, timeout_s):
            found.add(
                "fail",
                "https:// to a port that speaks plain http",
                "write http:// in etcd.endpoints",
            )
        elif isinstance(e, ssl.SSLError):
            found.add(*_refused_client(e, sent_cert))
        else:
            found.add("fail", f"the TLS handshake with {address}:{port} failed ({_why(e)})")
        return
    try:
        if context is not None:
            _server_certificate(found, writer.get_extra_info("peercert"))
        request = f"GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        writer.write(request.encode())
        async with timeout(timeout_s):
            await writer.drain()
            answer = await reader.read(65536)
            while len(answer) < 65536 and (more := await reader.read(65536 - len(answer))):
                answer += more
    except ssl.SSLError as e:
        found.add(*_refused_client(e, sent_cert))
        return
    except (OSError, asyncio.TimeoutError) as e:
        found.add("fail", f"etcd at {address}:{port} did not answer GET /version ({_why(e)})")
        return
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    _read_version(found, answer, context is None)


def _read_version(found: EndpointProbe, answer: bytes, plain: bool) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if plain and (
        answer[:1] == b"\x15" or b"HTTPS server" in answer or not lines[0].startswith("HTTP/")
    ):
        found.add(
            "fail",
            "http:// to a port that speaks TLS",
            "write https:// in etcd.endpoints, and set etcd.tls",
        )
        return
    status = lines[0].split(" ")
    if len(status) < 2 or status[1] != "200":
        found.add("fail", f"GET /version answered {lines[0][:60]!r}: is this etcd?")
        return
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    skew = None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        their = parsedate_to_datetime(headers["date"]).timestamp() + 0.5  # whole seconds
        skew = their - time.time()
    found.answered(_etcd_version(body), skew)


def _etcd_version(body: bytes) -> str:
    import json  # noqa: PLC0415

    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("etcdserver", "?"))[:32]
    return "?"


def _server_certificate(found: EndpointProbe, peer: object) -> None:
    if not isinstance(peer, dict) or "notAfter" not in peer:
        return
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(peer["notAfter"]), UTC)
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    level: Level = "warn" if days < DAYS_WARN else "ok"
    found.add(
        level,
        f"server certificate valid, {days:.0f} days left",
        "reissue it soon" if level == "warn" else "",
    )


def _untrusted(e: ssl.SSLCertVerificationError, host: str) -> tuple[Level, str, str]:
    code = e.verify_code
    if code == _HOSTNAME:
        return (
            "fail",
            f"the server certificate does not name {host} (not in its subjectAltName)",
            "use a name or address the certificate names, or reissue it with this one",
        )
    if code == _EXPIRED:
        return ("fail", "the server certificate has expired", "reissue it (etcd/gen-tls.sh)")
    if code == _NOT_YET_VALID:
        return ("fail", "the server certificate is not valid yet: check this host's clock", "")
    if code in _UNTRUSTED:
        return (
            "fail",
            "the server certificate is not signed by etcd.tls.ca (it comes from another CA)",
            "point etcd.tls.ca at the CA that signed the voters' certificates",
        )
    return ("fail", f"the server certificate is refused: {e.verify_message}", "")


async def _speaks_plain_http(address: str, port: int, timeout_s: float) -> bool:
    """Whether the port answers a plain HTTP request with HTTP (it is no TLS port)."""
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        async with timeout(timeout_s):
            reader, writer = await asyncio.open_connection(address, port)
            try:
                writer.write(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return (await reader.read(5)) == b"HTTP/"
            finally:
                writer.close()
    return False


def _refused_client(e: ssl.SSLError, sent_cert: bool) -> tuple[Level, str, str]:
    """A TLS alert from etcd about our side: no client certificate, or one it refuses."""
    text = str(e).lower()
    refused = ("certificate required", "unknown ca", "bad certificate", "certificate unknown")
    if not sent_cert and any(m in text for m in refused):
        return (
            "fail",
            "etcd requires a client certificate and this node sends none",
            "set etcd.tls.cert and etcd.tls.key",
        )
    if any(m in text for m in (*refused, "expired")):
        return (
            "fail",
            "etcd refused this node's client certificate (signed by a CA it does not trust, "
            "or expired)",
            "issue the node's certificate from etcd's client CA (etcd/gen-tls.sh)",
        )
    return ("fail", f"the TLS session failed: {_why(e)}", "")


def _why(e: BaseException) -> str:
    if isinstance(e, (TimeoutError, asyncio.TimeoutError)):
        return "timed out"
    if isinstance(e, ssl.SSLError) and e.reason:
        return e.reason.replace("_", " ").lower()
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def skew_finding(skews: list[float]) -> Finding | None:
    """The clock against etcd's, from the widest skew seen (None when no endpoint answered)."""
    if not skews:
        return None
    worst = max(skews, key=abs)
    text = f"clock {abs(worst):.1f} s {'behind' if worst > 0 else 'ahead of'} etcd's"
    if abs(worst) > SKEW_WARN_S:
        return Finding("warn", text, "run NTP (chrony, systemd-timesyncd) on this host")
    return Finding("ok", text)
