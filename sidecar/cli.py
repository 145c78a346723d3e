"""The ``ringside`` command line.

Every command takes the same configuration options (`config_options`), and every operator
mistake (a `ConfigError`, which includes identity and inventory errors) ends the same way: one
``ringside: error: ...`` line on stderr and exit code 2, never a traceback. Click's own usage
errors exit 2 as well.

Example::

    $ ringside identity --node-id hetzner-cpu1
    $ RINGSIDE_LEASE_TTL=30 ringside config --check
"""

import asyncio
import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from click.core import ParameterSource

from sidecar import __version__
from sidecar.config import LoadedConfig, RingsideConfig, load_config, render_with_sources
from sidecar.connect import open_store
from sidecar.daemon import run_sidecar
from sidecar.errors import ConfigError
from sidecar.health import EtcdHealth, check_etcd
from sidecar.identity import HostFacts, IdentityError, SourceReport, resolve_identity
from sidecar.inventory import load_inventory
from sidecar.keys import Keys
from sidecar.logs import setup_logging

EXIT_CONFIG_ERROR: Final = 2
EXIT_NO_QUORUM: Final = 1

Result = TypeVar("Result")

_CONFIG_OPTIONS: Final = (
    click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        help="YAML config file (default: $RINGSIDE_CONFIG, else defaults only).",
    ),
    click.option("--cluster", help="Cluster name; keys live under /ringside/<cluster>/."),
    click.option("--node-id", help="This node's id; overrides every other identity source."),
    click.option("--etcd-endpoints", metavar="URL[,URL...]", help="etcd client URLs."),
    click.option("--lease-ttl", type=int, metavar="SECONDS", help="Membership lease TTL (2-600)."),
    click.option("--http-listen", metavar="HOST:PORT", help="Local HTTP API address."),
    click.option(
        "--leader-eligible/--not-leader-eligible",
        default=None,
        help="Whether this node campaigns for leadership.",
    ),
    click.option(
        "--inventory",
        type=click.Path(path_type=Path),
        help="The orchestrator's distributed_hosts.yaml.",
    ),
    click.option(
        "--lock-file",
        type=click.Path(path_type=Path),
        help="Single-instance lock file (default /run/ringside/<cluster>.lock).",
    ),
    click.option(
        "--allow-unknown-node",
        is_flag=True,
        help="Accept a node id that is not a host in the inventory.",
    ),
)
_FLAG_PARAMS: Final = frozenset(
    {
        "cluster",
        "node_id",
        "etcd_endpoints",
        "lease_ttl",
        "http_listen",
        "leader_eligible",
        "inventory",
        "allow_unknown_node",
        "lock_file",
    }
)


@dataclass(frozen=True)
class ConfigRequest:
    """The config file a command was pointed at and the config flags the user actually passed.

    `flags` is keyed by option name (``{"--lease-ttl": 30}``), as `load_config` expects.
    """

    path: Path | None
    flags: Mapping[str, object]

    def load(self, env: Mapping[str, str] | None = None) -> LoadedConfig:
        """Load and validate the configuration against `env` (default: the process's)."""
        return load_config(self.path, os.environ if env is None else env, self.flags)


def config_options(command: Callable[..., Result]) -> Callable[..., Result]:
    """Add the shared configuration options; the command receives them as `config_request`.

    Only options given on the command line become flags, so a flag never hides an environment
    variable or a file setting the user did not mean to override.
    """

    @functools.wraps(command)
    def with_config_request(*args: Any, **kwargs: Any) -> Result:
        ctx = click.get_current_context()
        flags: dict[str, object] = {}
        for param in ctx.command.params:
            name = param.name
            if name in _FLAG_PARAMS:
                value = kwargs.pop(name)
                if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                    flags[_option_name(param, value)] = value
        request = ConfigRequest(path=kwargs.pop("config_path"), flags=flags)
        return command(*args, config_request=request, **kwargs)

    decorated: Callable[..., Result] = with_config_request
    for option in reversed(_CONFIG_OPTIONS):
        decorated = option(decorated)
    return decorated


def _option_name(param: click.Parameter, value: object) -> str:
    if value is False and isinstance(param, click.Option) and param.secondary_opts:
        return param.secondary_opts[0]
    return param.opts[0]


class _RingsideGroup(click.Group):
    """Turns operator mistakes into one stderr line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            click.echo(f"ringside: error: {' '.join(str(error).splitlines())}", err=True)
            ctx.exit(EXIT_CONFIG_ERROR)


@click.group(cls=_RingsideGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ringside")
def ringside() -> None:
    """ringside: etcd-backed membership and leader election for the orchestrator."""


@ringside.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@config_options
def identity(config_request: ConfigRequest, as_json: bool) -> None:
    """Show this node's id, the source it came from, and what every source offered.

    Exits 2 when an explicit id is rejected or no source gives a usable one.
    """
    loaded = config_request.load()
    try:
        result = resolve_identity(loaded, os.environ, HostFacts.gather())
    except IdentityError as error:
        if as_json:
            click.echo(_identity_json(None, None, error.reports, error=str(error)))
        else:
            click.echo(_report_table(error.reports), err=True)
        raise
    if as_json:
        click.echo(_identity_json(result.node_id, result.source, result.reports))
        return
    click.echo(f"node id: {result.node_id} (from {result.source})")
    click.echo(_report_table(result.reports))


@ringside.command("config")
@click.option("--check", is_flag=True, help="Only validate; print 'config ok' or the error.")
@config_options
def show_config(config_request: ConfigRequest, check: bool) -> None:
    """Validate the configuration; print it as YAML with each setting's source.

    A configured inventory is read too, so a broken inventory fails here rather than at start.
    """
    loaded = config_request.load()
    if loaded.config.inventory is not None:
        load_inventory(loaded.config.inventory)
    if check:
        click.echo("config ok")
        return
    click.echo(render_with_sources(loaded), nl=False)


@ringside.command("etcd")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@config_options
def etcd_check(config_request: ConfigRequest, as_json: bool) -> None:
    """Check etcd from this node: each endpoint's status, the Raft leader, quorum.

    Exits 0 when a quorum answers, 1 when it does not (etcd down or unreachable from here).
    """
    config = config_request.load().config
    health = asyncio.run(_check_etcd(config))
    if as_json:
        click.echo(json.dumps(_health_document(health)))
    else:
        click.echo(_health_text(health))
    if not health.quorum_ok:
        raise SystemExit(EXIT_NO_QUORUM)


async def _check_etcd(config: RingsideConfig) -> EtcdHealth:
    store = open_store(config.etcd)
    try:
        return await check_etcd(store, config.etcd.endpoints, Keys(config.cluster).prefix)
    finally:
        await store.close()


def _health_text(health: EtcdHealth) -> str:
    lines = []
    width = max(len(e.url) for e in health.endpoints)
    for e in health.endpoints:
        if e.status is None:
            lines.append(f"  {e.url:<{width}}  down  {e.error}")
            continue
        name = health.member_name(e.status.header.member_id)
        role = "leader" if e.status.leader == e.status.header.member_id else "follower"
        lines.append(
            f"  {e.url:<{width}}  up    etcd {e.status.version}  {name} ({role})  "
            f"raft term {e.status.raft_term}  {e.latency_s * 1000:.1f} ms"
        )
    if health.quorum_ok:
        leader = health.member_name(health.leader_id) if health.leader_id else "unknown"
        lines.append(
            f"quorum: ok (read at revision {health.revision}), raft leader {leader}, "
            f"{len(health.members)} members: {', '.join(m.name for m in health.members)}"
        )
    else:
        lines.append(f"quorum: NOT ok: {health.error}")
    return "\n".join(lines)


def _health_document(health: EtcdHealth) -> dict[str, Any]:
    return {
        "quorum_ok": health.quorum_ok,
        "revision": health.revision,
        "error": health.error,
        "raft_leader": health.member_name(health.leader_id) if health.leader_id else None,
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
@config_options
def run(config_request: ConfigRequest, log_format: str, log_level: str) -> None:
    """Run the sidecar: membership lease, election, and the local API, until SIGTERM.

    Exits 0 after a clean stop, 1 when it must not run (node id held by another live node,
    another sidecar on this node, API address taken), 2 for bad configuration.
    """
    setup_logging("json" if log_format == "json" else "text", log_level)
    raise SystemExit(run_sidecar(config_request.load()))


def main() -> None:
    """Console entry point of the ``ringside`` script."""
    ringside(prog_name="ringside")


def _report_table(reports: Sequence[SourceReport]) -> str:
    rows = [(report.source, report.value or "-", report.outcome) for report in reports]
    source_width = max(len(row[0]) for row in rows)
    value_width = max(len(row[1]) for row in rows)
    return "\n".join(
        f"  {source:<{source_width}}  {value:<{value_width}}  {outcome}"
        for source, value, outcome in rows
    )


def _identity_json(
    node_id: str | None,
    source: str | None,
    reports: Sequence[SourceReport],
    error: str | None = None,
) -> str:
    document = {
        "node_id": node_id,
        "source": source,
        "error": error,
        "sources": [dataclasses.asdict(report) for report in reports],
    }
    return json.dumps(document)
