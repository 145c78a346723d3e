"""What a sidecar's settings are and the rules each must satisfy.

The models are frozen and forbid unknown keys, so a typo in a config file is an error instead
of a setting that is silently ignored. Checks live here as pydantic validators; where a value
came from (default, file, environment, flag) is `sidecar.config`'s business.

Example::

    settings = RingsideConfig.model_validate({"lease_ttl": 30, "http": {"listen": "[::1]:9000"}})
    settings.http.port          # 9000
    settings.etcd.endpoints     # ("http://127.0.0.1:2379",)
"""

import ipaddress
import re
import socket
import ssl
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from sidecar.compat import Self
from sidecar.files import OpenToOthers, UnfitFile, check_readable, read_text

DNS_LABEL: Final = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def field_error(
    loc: tuple[int | str, ...], message: str, related: str | None = None
) -> PydanticCustomError:
    """A validation error filed under `loc`, relative to the model or field being validated.

    `related` names another dotted field whose source the error line should also show.
    """
    ctx: dict[str, Any] = {"loc": loc}
    if related is not None:
        ctx["related"] = related
    return PydanticCustomError("ringside", message, ctx)


def split_host_port(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:8776``); raise ValueError saying what is wrong."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{listen!r} is not host:port, e.g. 127.0.0.1:8776 or [::1]:8776")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError(f"{listen!r}: write an IPv6 address in brackets, e.g. [::1]:8776")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{listen!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def _dns_label(value: str) -> str:
    if not DNS_LABEL.fullmatch(value):
        rule = "1-63 of a-z, 0-9 and '-', no '-' at either end"
        raise ValueError(f"{value!r} is not a DNS label ({rule})")
    return value


def _etcd_url(value: str) -> str:
    url = urlsplit(value)
    if url.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} must start with http:// or https://")
    try:
        port = url.port
    except ValueError:
        raise ValueError(f"{value!r} has a port outside 1-65535") from None
    if not url.hostname or port is None:
        raise ValueError(f"{value!r} needs a host and a port, e.g. http://10.0.0.1:2379")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"{value!r} must not have a path, query or fragment")
    return value


def _health_url(value: str) -> str:
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"{value!r} must be an http:// or https:// URL with a host")
    try:
        url.port  # noqa: B018 - parsing it is the check
    except ValueError:
        raise ValueError(f"{value!r} has a port outside 1-65535") from None
    return value


def _readable_file(path: Path) -> Path:
    try:
        check_readable(path)
    except UnfitFile as e:
        raise ValueError(f"cannot read {path}: {e.reason}") from None
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    return path


DnsLabel = Annotated[str, AfterValidator(_dns_label)]


def _node_or_none(value: str) -> str:
    return value if value == "" else _dns_label(value)


PreferredNode = Annotated[str, AfterValidator(_node_or_none)]
EtcdUrl = Annotated[str, AfterValidator(_etcd_url)]
HealthUrl = Annotated[str, AfterValidator(_health_url)]
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsSettings(_Settings):
    """Client TLS for etcd: a CA bundle to trust, and optionally a client certificate."""

    ca: ReadableFile | None = None
    cert: ReadableFile | None = None
    key: ReadableFile | None = None

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> Self:
        if self.cert is not None and self.key is None:
            raise field_error(("key",), "is required when cert is set")
        if self.key is not None and self.cert is None:
            raise field_error(("cert",), "is required when key is set")
        return self

    @model_validator(mode="after")
    def _loads(self) -> Self:
        """Load the material now, as the etcd client will: a CA that is no certificate or a
        key that does not match its certificate is a configuration error (exit 2 at
        `config --check`), not a traceback when the sidecar first dials etcd."""
        context = ssl.create_default_context()
        if self.ca is not None:
            try:
                context.load_verify_locations(cafile=str(self.ca))
            except (ssl.SSLError, OSError, ValueError) as e:
                raise field_error(
                    ("ca",), f"{self.ca} is not a PEM CA certificate ({_ssl_reason(e)})"
                ) from None
        if self.cert is not None and self.key is not None:
            try:
                context.load_cert_chain(str(self.cert), str(self.key))
            except (ssl.SSLError, OSError, ValueError) as e:
                why = f"not a matching PEM certificate and key ({_ssl_reason(e)})"
                raise field_error(("cert",), f"{self.cert} and {self.key} are {why}") from None
        return self


def _ssl_reason(error: Exception) -> str:
    """OpenSSL's reason in a few words ("KEY_VALUES_MISMATCH"), not its whole tuple."""
    reason = getattr(error, "reason", None)
    return str(reason) if reason else (getattr(error, "strerror", None) or str(error))[:80]


class EtcdSettings(_Settings):
    """How to reach the etcd voters. A voter may be listed twice: public IP and tailnet IP."""

    endpoints: tuple[EtcdUrl, ...] = ("http://127.0.0.1:2379",)
    request_timeout: float = Field(default=1.5, gt=0)
    call_timeout: float | None = Field(default=None, gt=0)
    tls: TlsSettings | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: ReadableFile | None = None
    _file_password: str | None = PrivateAttr(default=None)

    @field_validator("endpoints")
    @classmethod
    def _some_urls_each_once(cls, endpoints: tuple[str, ...]) -> tuple[str, ...]:
        if not endpoints:
            raise ValueError("needs at least one URL, e.g. http://10.0.0.1:2379")
        first_index: dict[str, int] = {}
        for index, url in enumerate(endpoints):
            if url in first_index:
                message = f"{url} is already listed as etcd.endpoints[{first_index[url]}]"
                raise field_error((index,), message)
            first_index[url] = index
        return endpoints

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.password is not None and self.password_file is not None:
            raise field_error(("password_file",), "set password or password_file, not both")
        if self.password_file is not None:
            try:
                secret = read_text(self.password_file, limit=4096, private=True).rstrip("\r\n")
            except UnfitFile as e:
                message = f"cannot read {self.password_file}: {e.reason}"
                raise field_error(("password_file",), message) from None
            except OpenToOthers as e:  # refused, not warned about: ssh does the same with keys
                raise field_error(("password_file",), e.advice()) from None
            except (OSError, UnicodeDecodeError) as e:
                message = f"cannot read {self.password_file}: {e}"
                raise field_error(("password_file",), message) from None
            if not secret:
                raise field_error(("password_file",), f"{self.password_file} is empty")
            self._file_password = secret
        if self.username and self.effective_password is None:
            raise field_error(("password",), "is required when username is set (or password_file)")
        return self

    @property
    def effective_password(self) -> str | None:
        """The password to send: from `password`, or read from `password_file` at load time."""
        if self.password is not None:
            return self.password.get_secret_value()
        return self._file_password


class HttpSettings(_Settings):
    """The local HTTP API the orchestrator talks to; 8776 is free on every orchestrator node."""

    listen: str = "127.0.0.1:8776"
    token: str | None = None
    token_file: Path | None = None  # where a generated token lives (default: beside the lock)

    @field_validator("listen")
    @classmethod
    def _is_host_port(cls, listen: str) -> str:
        host, _ = split_host_port(listen)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            try:  # a name: it must resolve now, or `run` could only fail later, with exit 1
                socket.getaddrinfo(host, None)
            except (OSError, UnicodeError):
                raise ValueError(f"{host!r} in {listen!r} does not resolve to an address") from None
        return listen

    @property
    def host(self) -> str:
        """The address to bind, without IPv6 brackets."""
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        """The TCP port to bind."""
        return split_host_port(self.listen)[1]


class LeaderSettings(_Settings):
    """Whether this node campaigns, and how early it stops claiming before its lease can expire."""

    eligible: bool = False
    validity_margin: float = Field(default=2.0, ge=0)
    on_elected: str | None = None
    on_demoted: str | None = None
    hook_timeout: float = Field(default=10.0, gt=0)
    # The preferred leader (decision 0017): a node id; "" for none; unset: the inventory's
    # `preferred_leader`. The leader hands over to it once it has been ready this long.
    preferred: PreferredNode | None = None
    preferred_after: float = Field(default=60.0, ge=0, le=3600)
    # A leader honours a switchover request only once it has led this long, so requests
    # (from any node's credential) cannot move the leadership more often than this.
    switchover_hold: float = Field(default=5.0, ge=0, le=600)
    # Only while upgrading from 0.1 (decision 0010): count 0.1 candidates, which prove nothing
    # but their lease (decision 0022). Off, a record that declares no proof of life never leads.
    upgrade_from_0_1: bool = False


class OrchestratorSettings(_Settings):
    """The local orchestrator's own health check. Its result goes into this node's member record,
    so every node sees whether the orchestrator is up, not only whether its sidecar is."""

    health_url: HealthUrl | None = None
    check_interval: float = Field(default=5.0, ge=1, le=600)
    failures_before_unhealthy: int = Field(default=3, ge=1, le=100)
    # Health-aware leadership (decision 0015): an unhealthy orchestrator's node stands aside
    # for a healthy one, and stands again after `rejoin_after` seconds healthy.
    leadership: bool = True
    rejoin_after: float = Field(default=30.0, ge=0, le=3600)


class IdentitySettings(_Settings):
    """Where node identity files live; configurable so tests and unusual hosts can move them."""

    node_id_file: Path = Path("/etc/ringrift/node-id")
    p2p_defaults_file: Path = Path("/etc/default/ringrift-p2p")
    allow_unknown_node: bool = False


class RingsideConfig(_Settings):
    """The whole validated configuration of one sidecar."""

    cluster: DnsLabel = "ringrift"
    node_id: str | None = None
    etcd: EtcdSettings = Field(default_factory=EtcdSettings)
    lease_ttl: int = Field(default=10, ge=2, le=600)
    # The longest proof of life any node may declare (decision 0022); set alike on every node.
    max_lease_ttl: int = Field(default=60, ge=2, le=600)
    http: HttpSettings = Field(default_factory=HttpSettings)
    leader: LeaderSettings = Field(default_factory=LeaderSettings)
    labels: dict[str, str] = Field(default_factory=dict)
    inventory: Path | None = None
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    orchestrator: OrchestratorSettings = Field(default_factory=OrchestratorSettings)
    advertise_addresses: tuple[str, ...] = ()
    lock_file: Path | None = None

    @model_validator(mode="after")
    def _deadlines_fit_in_lease(self) -> Self:
        """A request or margin as long as the lease would let the lease expire unnoticed."""
        checks = (("etcd", "request_timeout"), ("leader", "validity_margin"))
        for section, name in checks:
            seconds = getattr(getattr(self, section), name)
            if seconds >= self.lease_ttl:
                message = f"{seconds} s must be less than lease_ttl ({self.lease_ttl} s)"
                raise field_error((section, name), message, related="lease_ttl")
        if self.lease_ttl > self.max_lease_ttl:
            message = f"{self.lease_ttl} s is longer than max_lease_ttl ({self.max_lease_ttl} s)"
            raise field_error(("lease_ttl",), message, related="max_lease_ttl")
        call = self.etcd.call_timeout
        if call is not None:
            period = self.lease_ttl / 3
            if call > period:
                message = (
                    f"{call} s is longer than a keepalive period (lease_ttl / 3 = {period:.2f} s):"
                    " one hung call would cost a keepalive"
                )
                raise field_error(("etcd", "call_timeout"), message, related="lease_ttl")
            if call < self.etcd.request_timeout:
                message = (
                    f"{call} s is shorter than etcd.request_timeout ({self.etcd.request_timeout} s)"
                )
                raise field_error(("etcd", "call_timeout"), message, related="etcd.request_timeout")
        return self

    @property
    def etcd_call_timeout(self) -> float:
        """How long one etcd call may take across all endpoints: `etcd.call_timeout`, else one
        keepalive period (lease_ttl / 3), but at least one request timeout and never more than
        one request timeout per endpoint. With six endpoints and the defaults that is 3.3 s,
        not 9 s against a 10 s lease."""
        if self.etcd.call_timeout is not None:
            return self.etcd.call_timeout
        per_endpoint = self.etcd.request_timeout * len(self.etcd.endpoints)
        return min(per_endpoint, max(self.etcd.request_timeout, self.lease_ttl / 3))
