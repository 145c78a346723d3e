"""Commands about the cluster, asked of the local sidecar (or of etcd directly with
`status --etcd`): `status`, `members`, `leader`, `resign`. They must start fast: their import
path is the standard library, click and `sidecar.cli.local_api`."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

import click

from sidecar.cli.base import (
    ETCD_TLS,
    EXIT_CONFIG_ERROR,
    EXIT_DEGRADED,
    ConfigRequest,
    config_options,
    node_etcd_user,
    output_option,
    ringside,
)
from sidecar.cli.local_api import SidecarClient, sidecar_url
from sidecar.cli.reports import StatusReport
from sidecar.cli.tables import FORMATS
from sidecar.events import ClusterEvent

if TYPE_CHECKING:
    from sidecar.config import RingsideConfig

Result = TypeVar("Result")


# --- asking a sidecar (or etcd) how the cluster is ---------------------------------------


def check_sidecar_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`--sidecar`: an http(s) URL with a host; a bare ``host:port`` means http."""
    if value is None:
        return None
    url = value if "://" in value else "http://" + value
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError for a port that is not a port
    except ValueError as e:
        raise click.BadParameter(f"{value!r}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"{value!r} is not an http(s) URL, e.g. http://127.0.0.1:8776")
    return url


SIDECAR_OPTION: Final = click.option(
    "--sidecar",
    metavar="URL",
    callback=check_sidecar_url,
    envvar="RINGSIDE_SIDECAR",
    help="The sidecar's API (default: $RINGSIDE_SIDECAR, else http://<http.listen> from the "
    "configuration).",
)


ETCD_READ: Final = ("cluster", *ETCD_TLS)
"""The settings a command that can read etcd directly (`--etcd`) takes besides `--etcd`."""


def etcd_direct_option(what: str) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """`--etcd [URL,...]`: read `what` from etcd instead of asking a sidecar; without a value,
    at the configured endpoints (`etcd.endpoints`, `RINGSIDE_ETCD_ENDPOINTS`)."""
    return click.option(
        "--etcd",
        "etcd_direct",
        is_flag=False,
        flag_value="",
        metavar="[URL,...]",
        help=f"Read {what} from etcd, not from a sidecar: at these endpoints, or without a "
        "value at the configured ones (no sidecar needed).",
    )


def reading_etcd(config_request: ConfigRequest, etcd_direct: str) -> ConfigRequest:
    """The configuration request with `--etcd`'s endpoints, when it named some."""
    if not etcd_direct:
        return config_request
    return ConfigRequest(config_request.path, {**config_request.flags, "--etcd": etcd_direct})


def client_for(
    config_request: ConfigRequest, sidecar: str | None, *, with_token: bool = False
) -> SidecarClient:
    """A client for `--sidecar`, else for the configured `http.listen`.

    The configuration (pydantic, ~0.1 s) is read only when it is needed: for the address when
    no `--sidecar` is given, and for `http.token` when the request needs one.
    """
    if sidecar is not None and not with_token:
        return SidecarClient(sidecar)
    config = config_request.load().config
    token = (config.http.token or _generated_token(config)) if with_token else None
    return SidecarClient(sidecar or sidecar_url(config.http.listen), token=token)


def _generated_token(config: RingsideConfig) -> str | None:
    """The token the sidecar generated (no `http.token` configured), when this user can read
    its file: the sidecar's own user can, nobody else."""
    from sidecar.api_token import read_token, token_path  # noqa: PLC0415
    from sidecar.lock import default_lock_path  # noqa: PLC0415

    lock = config.lock_file or default_lock_path(config.cluster)
    return read_token(token_path(config.http.token_file, lock))


@ringside.command()
@SIDECAR_OPTION
@etcd_direct_option("the cluster")
@output_option(*FORMATS)
@click.option("-w", "--watch", is_flag=True, help="Then print one timestamped line per change.")
@click.option(
    "--wait-ready",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="First wait up to SECONDS for the sidecar to be ready.",
)
@config_options(*ETCD_READ, "inventory")
def status(
    *,
    config_request: ConfigRequest,
    sidecar: str | None,
    etcd_direct: str | None,
    output: str,
    watch: bool,
    wait_ready: float | None,
) -> None:
    """The cluster as this node's sidecar sees it: leader, epoch, quorum, members.

    Exits 0 when there is a leader and an etcd quorum, 1 when not, 2 for a usage or
    configuration error, 3 when the sidecar (or etcd, with --etcd) does not answer or answers
    something that is not a status.
    """
    if etcd_direct is not None:
        import asyncio  # noqa: PLC0415

        if sidecar is not None:
            raise click.UsageError("--sidecar and --etcd exclude each other")
        loaded = reading_etcd(config_request, etcd_direct).load()
        user = node_etcd_user(loaded)
        if watch:
            _until_interrupted(
                lambda: asyncio.run(
                    _status_from_etcd(loaded.config, user, output, True, wait_ready)
                )
            )
        status = _status_from_etcd(loaded.config, user, output, False, wait_ready)
        raise SystemExit(asyncio.run(status))
    client = client_for(config_request, sidecar)
    ready = True
    if wait_ready is not None:
        ready, reason = client.wait_ready(wait_ready)
        if not ready:
            click.echo(f"ringside: not ready after {wait_ready:g} s: {reason}", err=True)
    report = client.status()
    _show_status(report, output)
    if watch:
        from sidecar.cli.watch import follow_sidecar  # noqa: PLC0415

        _until_interrupted(lambda: follow_sidecar(client, report, *_watch_printers(output)))
    raise SystemExit(0 if report.healthy and ready else EXIT_DEGRADED)


async def _status_from_etcd(
    config: RingsideConfig,
    default_user: str | None,
    output: str,
    watch: bool,
    wait_ready: float | None,
) -> int:
    """`status --etcd`: read (until healthy, with --wait-ready), show, then poll (--watch)."""
    import asyncio  # noqa: PLC0415

    from sidecar.cli.etcd_status import EtcdStatusReader  # noqa: PLC0415  # aiohttp, pydantic
    from sidecar.cli.watch import follow_etcd  # noqa: PLC0415
    from sidecar.deadline import Deadline  # noqa: PLC0415

    async with EtcdStatusReader(config, default_user=default_user) as reader:
        report = await reader.read()
        deadline = Deadline(wait_ready or 0.0)
        while not report.healthy and not deadline.expired:
            await asyncio.sleep(min(1.0, deadline.remaining()))
            report = await reader.read()
        _show_status(report, output)
        if watch:
            await follow_etcd(reader.read, report, *_watch_printers(output))
    return 0 if report.healthy else EXIT_DEGRADED


def _show_status(report: StatusReport, output: str) -> None:
    from sidecar.cli import tables  # noqa: PLC0415

    if output in ("json", "yaml"):
        click.echo(tables.document(report.document, output))
    else:
        click.echo(tables.status_text(report, wide=output == "wide"))


def _watch_printers(output: str) -> tuple[Callable[[ClusterEvent], None], Callable[[str], None]]:
    """How a watch prints a change, and a note about the watch itself (a source lost or back):
    timestamped lines for people; JSON lines (or YAML documents) on stdout, notes on stderr."""
    from sidecar.cli import tables  # noqa: PLC0415

    flapping = FlapWindow()

    def emit(event: ClusterEvent) -> None:
        if output == "json":
            click.echo(json.dumps(event.document()))
        elif output == "yaml":
            click.echo("---\n" + tables.document(event.document(), "yaml"))
        else:
            click.echo(tables.stamped(event.sentence(), event.at))
            flapped = flapping.saw(event)
            if flapped is not None:
                click.echo(tables.stamped(flapped, event.at))

    def note(sentence: str) -> None:
        click.echo(tables.stamped(sentence), err=output in ("json", "yaml"))

    return emit, note


class FlapWindow:
    """Groups a flapping node for `status --watch`: once a node has left `times` times within
    `window_s`, one more line says so ("vast-29118471 flapped 3 times in 2 min")."""

    def __init__(self, times: int = 3, window_s: float = 120.0) -> None:
        self.times, self.window_s = times, window_s
        self._left: dict[str, list[float]] = {}

    def saw(self, event: ClusterEvent) -> str | None:
        node = event.detail.get("node_id")
        if event.kind != "member_left" or not isinstance(node, str):
            return None
        recent = [t for t in self._left.get(node, []) if event.at - t <= self.window_s]
        recent.append(event.at)
        self._left[node] = recent
        if len(recent) < self.times:
            return None
        minutes = max(1, round((recent[-1] - recent[0]) / 60))
        return f"{node} flapped {len(recent)} times in {minutes} min"


def _until_interrupted(follow: Callable[[], object]) -> None:
    """Run a watch until Ctrl-C, which is how a watch is meant to end (exit 0, no message)."""
    try:
        follow()
    except KeyboardInterrupt:
        raise SystemExit(0) from None


@ringside.command()
@click.argument("member_id", metavar="[NODE_ID]", required=False)
@SIDECAR_OPTION
@output_option(*FORMATS)
@config_options()
def members(
    config_request: ConfigRequest, member_id: str | None, sidecar: str | None, output: str
) -> None:
    """The live members (or the one NODE_ID): role, addresses, since when, labels.

    Exits 1 when NODE_ID is not a live member, 3 when the sidecar does not answer.
    """
    from sidecar.cli import tables  # noqa: PLC0415

    client = client_for(config_request, sidecar)
    if member_id is None:
        found = client.members()
    else:
        member = client.member(member_id)
        if member is None:
            click.echo(f"ringside: {member_id} is not a live member", err=True)
            raise SystemExit(EXIT_DEGRADED)
        found = (member,)
    if output in ("json", "yaml"):
        documents = [dict(m.document) for m in found]
        click.echo(tables.document(documents[0] if member_id else {"members": documents}, output))
    else:
        click.echo("\n".join(tables.member_rows(found, wide=output == "wide")))


@ringside.command()
@SIDECAR_OPTION
@output_option("table", "json", "yaml")
@config_options()
def version(config_request: ConfigRequest, sidecar: str | None, output: str) -> None:
    """This command's version and, when the sidecar answers, every live member's: what a
    rolling upgrade needs to see (as `patronictl version`)."""
    from sidecar import __version__  # noqa: PLC0415
    from sidecar.cli import tables  # noqa: PLC0415
    from sidecar.cli.reports import NoAnswer  # noqa: PLC0415

    client = client_for(config_request, sidecar)
    try:
        members = {m.node_id: m.version for m in client.members()}
        unanswered = None
    except NoAnswer as e:
        members, unanswered = {}, str(e)
    if output != "table":
        found = {"client": __version__, "members": members, "sidecar_error": unanswered}
        click.echo(tables.document(found, output))
        return
    click.echo(f"ringside {__version__} (this command)")
    for node_id, their in sorted(members.items()):
        click.echo(tables.safe(f"  {node_id}: ringside {their or 'unknown'}"))
    if unanswered is not None:
        click.echo(tables.safe(f"members: not known ({unanswered})"))


@ringside.command()
@SIDECAR_OPTION
@output_option("table", "json", "yaml")
@config_options()
def leader(config_request: ConfigRequest, sidecar: str | None, output: str) -> None:
    """Who leads and at which epoch (the fencing token). Exits 1 when nobody leads."""
    from sidecar.cli import tables  # noqa: PLC0415

    report = client_for(config_request, sidecar).leader()
    if output in ("json", "yaml"):
        click.echo(tables.document(report.document, output))
    else:
        click.echo(tables.leader_text(report))
    if report.leader is None:
        raise SystemExit(EXIT_DEGRADED)


@ringside.command()
@SIDECAR_OPTION
@output_option("text", "json", "yaml")
@config_options()
def resign(config_request: ConfigRequest, sidecar: str | None, output: str) -> None:
    """Make this node hand leadership over now; the next candidate leads with a higher epoch.

    Sends `http.token` from the configuration, else the token the sidecar generated (its
    file, beside the lock file, is readable by the sidecar's user only). Exits 1 when this
    node is not the leader, 2 when the sidecar refuses the request (token missing or wrong,
    not loopback).
    """
    client = client_for(config_request, sidecar, with_token=True)
    answer = client.resign()
    if output != "text":
        from sidecar.cli import tables  # noqa: PLC0415

        click.echo(tables.document({"status": answer.status, **answer.document}, output))
    if answer.status == 200:
        if output == "text":
            epoch = answer.document.get("epoch")
            click.echo(f"resigned: epoch {epoch} handed over; {_successor(client, epoch)}")
        return
    if answer.status == 409:
        leader = answer.document.get("leader")
        where = (
            f"; {leader} leads (run `ringside switchover` to move it from here)"
            if isinstance(leader, str)
            else ""
        )
        click.echo(f"ringside: not resigned: {answer.error}{where}", err=True)
        raise SystemExit(EXIT_DEGRADED)
    hint = ""
    if answer.status == 401:
        hint = " (run as the sidecar's user, which can read its token file, or set http.token)"
    click.echo(
        f"ringside: error: the sidecar refused (HTTP {answer.status}): {answer.error}{hint}",
        err=True,
    )
    raise SystemExit(EXIT_CONFIG_ERROR)


def _successor(client: SidecarClient, old: object, within_s: float = 3.0) -> str:
    """Who leads after our resign, once the sidecar names a leader at a higher epoch."""
    import time  # noqa: PLC0415

    from sidecar.cli import tables  # noqa: PLC0415

    deadline = time.monotonic() + within_s
    while True:
        now = client.leader()
        if now.leader is not None and isinstance(old, int) and (now.epoch or 0) > old:
            return tables.safe(f"{now.leader} leads at epoch {now.epoch}")
        if time.monotonic() >= deadline:
            return "no new leader yet"
        time.sleep(0.05)


@ringside.command()
@SIDECAR_OPTION
@click.option("--to", "to", metavar="NODE", help="The node that should lead (default: the next).")
@click.option(
    "--timeout",
    type=click.FloatRange(1, 600),
    default=15.0,
    show_default=True,
    help="Seconds to wait for the new leader; the request is withdrawn after that.",
)
@config_options()
def switchover(
    config_request: ConfigRequest, sidecar: str | None, to: str | None, timeout: float
) -> None:
    """Ask the current leader, on whichever node, to hand over: to NODE, or to the next
    candidate. Goes through etcd (decision 0016), so it works from any node.

    Prints who leads afterwards and at which epoch. Exits 0 once the handover happened, 1 when
    it was refused (NODE is not a live, eligible, healthy candidate; no leader) or nothing
    changed in time, 2 when the sidecar refuses the request (token, not loopback).
    """
    import time  # noqa: PLC0415

    client = client_for(config_request, sidecar, with_token=True)
    answer = client.switchover(to, timeout)
    if answer.status in (409, 503):
        click.echo(f"ringside: no switchover: {answer.error}", err=True)
        raise SystemExit(EXIT_DEGRADED)
    if answer.status != 202:
        click.echo(
            f"ringside: error: the sidecar refused (HTTP {answer.status}): {answer.error}",
            err=True,
        )
        raise SystemExit(EXIT_CONFIG_ERROR)
    epoch = answer.document.get("epoch")
    asked = epoch if isinstance(epoch, int) else 0
    deadline = time.monotonic() + timeout
    while True:
        report = client.leader()
        moved = report.epoch is not None and report.epoch > asked and report.leader is not None
        if moved and (to is None or report.leader == to):
            click.echo(f"switchover done: {report.leader} leads at epoch {report.epoch}")
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    now = f"{report.leader} leads at epoch {report.epoch}" if report.leader else "no leader"
    click.echo(
        f"ringside: switchover not done within {timeout:g} s (request withdrawn): {now}", err=True
    )
    raise SystemExit(EXIT_DEGRADED)
