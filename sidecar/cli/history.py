"""`ringside events` and `ringside flaps`: the cluster history recorded in etcd (decision
0018), through the local sidecar or, with `--etcd`, read from etcd directly (a laptop after
the fact: the sidecars that saw the events may be long gone). Times are UTC, with the zone."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from sidecar.cli.base import (
    ConfigRequest,
    config_options,
    node_etcd_user,
    ringside,
)
from sidecar.cli.cluster import (
    ETCD_READ,
    SIDECAR_OPTION,
    client_for,
    etcd_direct_option,
    reading_etcd,
)
from sidecar.events import ClusterEvent

if TYPE_CHECKING:
    from sidecar.history_entries import HistoryRead
    from sidecar.settings import RingsideConfig


def _since(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """`--since 1h`: the unix time that long ago."""
    from sidecar.flaps import parse_since  # noqa: PLC0415  # `ringside status` stays light

    try:
        return time.time() - parse_since(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


_ETCD_OPTION = etcd_direct_option("the history")


def _history(
    config_request: ConfigRequest,
    sidecar: str | None,
    etcd_direct: str | None,
    since: float,
    node: str | None,
) -> list[ClusterEvent]:
    if etcd_direct is None:
        return client_for(config_request, sidecar).history(since, node)
    if sidecar is not None:
        raise click.UsageError("--sidecar and --etcd exclude each other")
    import asyncio  # noqa: PLC0415

    loaded = reading_etcd(config_request, etcd_direct).load()
    read = asyncio.run(_from_etcd(loaded.config, node_etcd_user(loaded), since, node))
    if read.skipped:
        click.echo(read.summary(), err=True)
    return read.events


async def _from_etcd(
    config: RingsideConfig, user: str | None, since: float, node: str | None
) -> HistoryRead:
    from sidecar.cli.reports import NoAnswer  # noqa: PLC0415
    from sidecar.etcd_connection import open_store  # noqa: PLC0415
    from sidecar.history_entries import read_recorded  # noqa: PLC0415
    from sidecar.keys import Keys  # noqa: PLC0415
    from sidecar.store.errors import StoreError  # noqa: PLC0415

    store = open_store(config.etcd, default_user=user)
    try:
        return await read_recorded(store, Keys(config.cluster), since=since, node=node)
    except StoreError as e:
        where = ", ".join(config.etcd.endpoints)
        raise NoAnswer(f"cannot read the cluster history from etcd at {where}: {e}") from None
    finally:
        await store.close()


def _reading(default_since: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The options both commands share: how far back, the output, and where to read."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        for option in reversed(
            (
                click.option("--since", "since", default=default_since, show_default=True,
                             callback=_since, metavar="DURATION",
                             help="How far back: 90s, 15m, 1h, 7d."),
                click.option("-o", "--output", type=click.Choice(["table", "json"]),
                             default="table", show_default=True,
                             help="For people; json for programs."),
                SIDECAR_OPTION,
                _ETCD_OPTION,
            )
        ):  # fmt: skip
            command = option(command)
        return config_options(*ETCD_READ)(command)

    return decorate


@ringside.command()
@click.option("--node", metavar="NODE", help="Only events about this node.")
@_reading("1h")
def events(
    *,
    config_request: ConfigRequest,
    since: float,
    node: str | None,
    output: str,
    sidecar: str | None,
    etcd_direct: str | None,
) -> None:
    """The cluster's history: joins and leaves (stopped or expired), leader changes and why,
    quorum lost and regained, orchestrators down and up. Recorded in etcd by the leader, so it
    outlives any sidecar; `by` names the leaders that recorded each event (decision 0023)."""
    found = _history(config_request, sidecar, etcd_direct, since, node)
    if output == "json":
        click.echo(json.dumps([e.document() for e in found], indent=2))
        return
    from sidecar.cli.tables import stamped  # noqa: PLC0415

    width = max((len(e.writers) for e in found), default=0)
    for event in found:
        click.echo(stamped(f"by {event.writers:<{width}}  {event.sentence()}", event.at))
    if not found:
        click.echo("no events recorded in that time", err=True)


@ringside.command()
@_reading("24h")
def flaps(
    config_request: ConfigRequest,
    since: float,
    output: str,
    sidecar: str | None,
    etcd_direct: str | None,
) -> None:
    """Per node: how many times it left and came back, total and longest absence, and why it
    left (stopped: a clean stop; expired: its lease ran out, a crash or a cut-off link)."""
    from sidecar.flaps import flap_report, flap_rows  # noqa: PLC0415

    found = _history(config_request, sidecar, etcd_direct, since, None)
    report = flap_report(found, time.time())
    if output == "json":
        click.echo(json.dumps([f.document() for f in report], indent=2))
        return
    if not report:
        from sidecar.cli.tables import stamped  # noqa: PLC0415

        click.echo(stamped("no node left the cluster since then", since))
        return
    from sidecar.cli.tables import safe  # noqa: PLC0415

    for line in flap_rows(report):
        click.echo(safe(line))


__all__ = ["events", "flaps"]
