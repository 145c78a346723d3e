"""`ringside guard`: the filter in front of a voter's public etcd client port (decision 0011)."""

from __future__ import annotations

from pathlib import Path

import click

from sidecar.cli.base import ringside
from sidecar.errors import ConfigError

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@ringside.command("guard")
@click.option("--listen", required=True, metavar="HOST:PORT", help="The public client address.")
@click.option("--upstream", required=True, metavar="URL", help="etcd's loopback client URL.")
@click.option("--cert", type=_FILE, help="Server certificate for the public port (TLS).")
@click.option("--key", type=_FILE, help="Its key.")
@click.option("--client-ca", type=_FILE, help="Require client certificates signed by this CA.")
@click.option("--upstream-ca", type=_FILE, help="CA of etcd's loopback port, when it is https.")
@click.option("--upstream-cert", type=_FILE, help="Client certificate for etcd's loopback port.")
@click.option("--upstream-key", type=_FILE, help="Its key.")
def guard(
    *,
    listen: str,
    upstream: str,
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
    upstream_ca: Path | None,
    upstream_cert: Path | None,
    upstream_key: Path | None,
) -> None:
    """Pass only the etcd calls a sidecar makes; refuse alarms, compaction, auth and member
    changes (etcd < 3.5.28 does not check them: CVE-2026-33413)."""
    import ssl  # noqa: PLC0415

    from aiohttp import web  # noqa: PLC0415

    from sidecar.guard import Guard  # noqa: PLC0415
    from sidecar.settings import split_host_port  # noqa: PLC0415

    try:
        host, port = split_host_port(listen)
    except ValueError as e:
        raise ConfigError(f"--listen: {e}") from None
    if (cert is None) != (key is None) or (client_ca is not None and cert is None):
        raise ConfigError("--cert and --key go together, and --client-ca needs them")
    server_ssl = None
    try:
        if cert is not None and key is not None:
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ssl.load_cert_chain(str(cert), str(key))
            if client_ca is not None:
                server_ssl.load_verify_locations(cafile=str(client_ca))
                server_ssl.verify_mode = ssl.CERT_REQUIRED
        upstream_ssl: ssl.SSLContext | bool = True
        if upstream_ca is not None or upstream_cert is not None:
            context = ssl.create_default_context(
                cafile=str(upstream_ca) if upstream_ca is not None else None
            )
            if upstream_cert is not None:
                context.load_cert_chain(
                    str(upstream_cert), str(upstream_key) if upstream_key else None
                )
            upstream_ssl = context
    except (ssl.SSLError, OSError) as e:
        raise ConfigError(f"TLS material does not load: {e}") from None
    app = Guard(upstream, upstream_ssl=upstream_ssl).app()
    web.run_app(app, host=host, port=port, ssl_context=server_ssl, print=None, access_log=None)
