"""Commands about this node: `identity`, `config`, `etcd` (can this node reach a quorum?) and
`run` (the sidecar itself). Their heavy imports happen inside each command."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from sidecar.cli.base import (
    ETCD,
    EVERY_SETTING,
    EXIT_DEGRADED,
    NODE,
    ConfigRequest,
    config_options,
    node_etcd_user,
    output_option,
    ringside,
)
from sidecar.compat import UTC

if TYPE_CHECKING:
    from sidecar.cli.etcd_check import EtcdHealth
    from sidecar.config import RingsideConfig
    from sidecar.identity import SourceReport


@ringside.command()
@output_option("table", "json", "yaml")
@config_options(*NODE)
def identity(config_request: ConfigRequest, output: str) -> None:
    """Show this node's id, the source it came from, and what every source offered.

    Exits 2 when an explicit id is rejected or no source gives a usable one.
    """
    from sidecar.identity import HostFacts, IdentityError, resolve_identity  # noqa: PLC0415

    loaded = config_request.load()
    try:
        result = resolve_identity(loaded, os.environ, HostFacts.gather())
    except IdentityError as error:
        if output != "table":
            click.echo(_identity_document(None, None, error.reports, output, error=str(error)))
        else:
            click.echo(_report_table(error.reports), err=True)
        raise
    if output != "table":
        click.echo(_identity_document(result.node_id, result.source, result.reports, output))
        return
    click.echo(f"node id: {result.node_id} (from {result.source})")
    click.echo(_report_table(result.reports))


@ringside.command("config")
@click.option("--check", is_flag=True, help="Only validate; print 'config ok' or the error.")
@output_option("yaml", "json")
@config_options(*EVERY_SETTING)
def show_config(config_request: ConfigRequest, check: bool, output: str) -> None:
    """Validate the configuration; print it as YAML with each setting's source (`-o json`:
    the settings and their sources as two objects).

    A configured inventory is read too, so a broken inventory fails here rather than at start.
    """
    from sidecar.config import render_with_sources  # noqa: PLC0415
    from sidecar.inventory import load_inventory  # noqa: PLC0415

    loaded = config_request.load()
    if loaded.config.inventory is not None:
        load_inventory(loaded.config.inventory)
    if check:
        click.echo("config ok")
        return
    if output == "json":
        from sidecar.config import config_document  # noqa: PLC0415

        click.echo(json.dumps(config_document(loaded), indent=2))
        return
    click.echo(render_with_sources(loaded), nl=False)


@ringside.command("etcd")
@output_option("table", "json", "yaml")
@config_options(*ETCD, *NODE)
def etcd_check(config_request: ConfigRequest, output: str) -> None:
    """Check etcd from this node: each endpoint's status, the Raft leader, quorum.

    Exits 0 when a quorum answers, 1 when it does not (etcd down or unreachable from here).
    """
    import asyncio  # noqa: PLC0415  # ~30 ms that `ringside status` does not need

    from sidecar.certificates import expiries  # noqa: PLC0415

    loaded = config_request.load()
    config = loaded.config
    health = asyncio.run(_check_etcd(config, node_etcd_user(loaded)))
    tls = config.etcd.tls
    certificates = expiries({"ca": tls.ca, "client": tls.cert} if tls is not None else {})
    if output != "table":
        from sidecar.cli.tables import document  # noqa: PLC0415

        found = _health_document(health)
        found["certificates"] = [
            {"certificate": role, "not_after": date.isoformat(), "days_left": _days(date)}
            for role, date in certificates.items()
        ]
        click.echo(json.dumps(found) if output == "json" else document(found, output))
    else:
        click.echo(_health_text(health))
        for role, date in certificates.items():
            days = _days(date)
            warning = "  WARNING: renew it (etcd/gen-tls.sh --reissue)" if days < 30 else ""
            click.echo(
                f"tls: {role} certificate expires {date:%Y-%m-%d} ({days:.0f} days){warning}"
            )
    if not health.quorum_ok:
        raise SystemExit(EXIT_DEGRADED)


async def _check_etcd(config: RingsideConfig, default_user: str | None) -> EtcdHealth:
    from sidecar.cli.etcd_check import check_etcd  # noqa: PLC0415
    from sidecar.etcd_connection import open_store  # noqa: PLC0415
    from sidecar.keys import Keys  # noqa: PLC0415

    store = open_store(config.etcd, default_user=default_user)
    try:
        return await check_etcd(store, config.etcd.endpoints, Keys(config.cluster).prefix)
    finally:
        await store.close()


def _days(date: datetime) -> float:
    """Days from now until `date`, to one decimal (negative once past)."""
    return round((date - datetime.now(UTC)).total_seconds() / 86400, 1)


def _health_text(health: EtcdHealth) -> str:
    lines = []
    width = max(len(e.url) for e in health.endpoints)
    for e in health.endpoints:
        if e.status is None:
            lines.append(f"  {e.url:<{width}}  down  {e.error}")
            continue
        name = health.member_name(e.status.header.member_id)
        if e.status.leader is None:  # etcd >= 3.5.28 tells its status to root only
            lines.append(
                f"  {e.url:<{width}}  up    {name} (read ok; status for root only)  "
                f"raft term {e.status.raft_term}  {e.latency_s * 1000:.1f} ms"
            )
            continue
        if not health.quorum_ok:  # what a member cut off from a quorum believes is stale
            role = "no quorum"
        elif e.status.leader == e.status.header.member_id:
            role = "leader"
        else:
            role = "follower"
        lines.append(
            f"  {e.url:<{width}}  up    etcd {e.status.version}  {name} ({role})  "
            f"raft term {e.status.raft_term}  {e.latency_s * 1000:.1f} ms"
        )
    if health.quorum_ok:
        leader = health.raft_leader or "unknown"
        lines.append(
            f"quorum: ok (read at revision {health.revision}), raft leader {leader}, "
            f"{len(health.members)} members: {', '.join(m.name for m in health.members)}"
        )
    else:
        up = sum(1 for e in health.endpoints if e.status is not None)
        if up:  # members answer, yet no read: they have no leader to serve it (one verdict)
            lines.append(
                f"quorum: NOT ok: {up} of {len(health.endpoints)} endpoints answer, but no "
                f"linearizable read went through: the voters have no quorum ({health.error})"
            )
        else:
            lines.append(f"quorum: NOT ok: {health.error}")
    return "\n".join(lines)


def _health_document(health: EtcdHealth) -> dict[str, Any]:
    return {
        "quorum_ok": health.quorum_ok,
        "revision": health.revision,
        "error": health.error,
        "raft_leader": health.raft_leader,
        "members": [m.name for m in health.members],
        "endpoints": [
            {
                "url": e.url,
                "up": e.up,
                "error": e.error,
                "member": health.member_name(e.status.header.member_id) if e.status else None,
                "version": e.status.version if e.status else None,
                "latency_ms": round(e.latency_s * 1000, 1),
            }
            for e in health.endpoints
        ],
    }


@ringside.command()
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line of text, or one JSON object, per event.",
)
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING...")
@config_options(*EVERY_SETTING)
def run(config_request: ConfigRequest, log_format: str, log_level: str) -> None:
    """Run the sidecar: membership lease, election, and the local API, until SIGTERM.

    Exits 0 after a clean stop, 1 when it must not run (node id held by another live node,
    another sidecar on this node, API address taken), 2 for bad configuration.
    """
    from sidecar.daemon import run_sidecar  # noqa: PLC0415  # aiohttp and the agent
    from sidecar.logs import setup_logging  # noqa: PLC0415

    setup_logging("json" if log_format == "json" else "text", log_level)
    raise SystemExit(run_sidecar(config_request.load()))


def _report_table(reports: Sequence[SourceReport]) -> str:
    rows = [(report.source, report.value or "-", report.outcome) for report in reports]
    source_width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    return "\n".join(
        f"  {source:<{source_width}}  {value:<{value_width}}  {outcome}"
        for source, value, outcome in rows
    )


def _identity_document(
    node_id: str | None,
    source: str | None,
    reports: Sequence[SourceReport],
    output: str,
    error: str | None = None,
) -> str:
    from sidecar.cli.tables import document  # noqa: PLC0415

    found = {
        "node_id": node_id,
        "source": source,
        "error": error,
        "sources": [dataclasses.asdict(report) for report in reports],
    }
    return document(found, output)
