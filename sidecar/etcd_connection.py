"""Turn the `etcd:` settings into a store: the one place config meets the etcd client.

Kept apart from `sidecar.store` so the store stays free of ringside's configuration, and
from the commands so `ringside run`, `ringside status` and `ringside etcd` all connect the
same way (same endpoints order, deadline, TLS and credentials).
"""

from __future__ import annotations

from sidecar.errors import ConfigError
from sidecar.settings import EtcdSettings
from sidecar.store.etcd import EtcdStore
from sidecar.store.gateway import TlsFiles


def open_store(
    settings: EtcdSettings,
    *,
    call_timeout: float | None = None,
    credentials: tuple[str, str] | None = None,
    default_user: str | None = None,
) -> EtcdStore:
    """An etcd store for `settings`. Nothing is dialled until the first request.

    `call_timeout` bounds one call across all endpoints; the daemon passes
    `RingsideConfig.etcd_call_timeout` (it depends on the lease). Without it, a call may try
    every endpoint once, which suits one-shot commands. `credentials` (user, password)
    replace the configured ones: the operator's `ringside auth` commands log in as root.
    A password without `etcd.username` logs in as `default_user`, the node's own user
    (`Keys.etcd_user`), so a node needs only its password file.
    """
    username = settings.username
    if username is None and settings.effective_password is not None and credentials is None:
        if default_user is None:
            message = "no etcd.username, and no node id to name the node's own user: set either"
            raise ConfigError(message)
        username = default_user
    tls = None
    if settings.tls is not None:
        tls = TlsFiles(ca=settings.tls.ca, cert=settings.tls.cert, key=settings.tls.key)
    return EtcdStore.connect(
        settings.endpoints,
        request_timeout=settings.request_timeout,
        call_timeout=call_timeout or settings.call_timeout,
        tls=tls,
        username=credentials[0] if credentials else username,
        password=credentials[1] if credentials else settings.effective_password,
    )
