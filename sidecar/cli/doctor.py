"""`ringside doctor`: can this node join, and if not, what to change (`sidecar.cli.diagnosis`)."""

from __future__ import annotations

import json
import os

import click

from sidecar.cli.base import (
    EVERY_SETTING,
    EXIT_DEGRADED,
    ConfigRequest,
    config_options,
    ringside,
)

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@ringside.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Lines for people; json for programs.")  # fmt: skip
@config_options(*EVERY_SETTING)
def doctor(config_request: ConfigRequest, output: str) -> None:
    """Check everything this node needs to join, in order, and say what to change: the
    configuration, the node id, each etcd endpoint (name, TCP, TLS, certificates), the login
    and this node's rights, the quorum, the clock, the API address and the addresses it would
    advertise. Exits 0 when the node can join, 1 when something blocks it, 2 for a usage or
    configuration error."""
    import asyncio  # noqa: PLC0415

    from sidecar.cli.diagnosis import diagnose, unloadable  # noqa: PLC0415  # aiohttp, pydantic
    from sidecar.errors import ConfigError  # noqa: PLC0415
    from sidecar.identity import HostFacts  # noqa: PLC0415

    try:
        loaded = config_request.load()
    except ConfigError as e:  # the first thing doctor found, not a usage error
        found = unloadable(e)
    else:
        found = asyncio.run(diagnose(loaded, os.environ, HostFacts.gather()))
    if output == "json":
        click.echo(json.dumps(found.document(), indent=2))
    else:
        from sidecar.cli.tables import safe  # noqa: PLC0415

        for section in found.sections:
            click.echo(safe(section.title))
            for finding in section.findings:
                click.echo(safe(f"  {_MARK[finding.level]}  {finding.text}"))
                if finding.fix and finding.level != "ok":
                    click.echo(safe(f"        -> {finding.fix}"))
        problems = len(found.blocking)
        verdict = (
            "this node can join"
            if not problems
            else f"this node cannot join: {problems} problem{'s' * (problems > 1)} (FAIL above)"
        )
        click.echo(verdict)
    if found.blocking:
        raise SystemExit(EXIT_DEGRADED)
