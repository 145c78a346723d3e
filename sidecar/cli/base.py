"""What every `ringside` command shares: the group, its exit codes and error handling, and
the configuration options (`config_options`) with their precedence flags > env > file.

Kept to the standard library and click so that the fast commands stay fast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click
from click.core import ParameterSource

from sidecar import __version__
from sidecar.cli.reports import NoAnswer
from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from sidecar.config import LoadedConfig


EXIT_DEGRADED: Final = 1  # no leader, or no etcd quorum
EXIT_CONFIG_ERROR: Final = 2
EXIT_UNREACHABLE: Final = 3  # the sidecar or etcd did not answer, or answered garbage

Result = TypeVar("Result")

_CONFIG_FILE_OPTION: Final = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="YAML config file (default: $RINGSIDE_CONFIG, else /etc/ringside/ringside.yaml "
    "when it exists).",
)
# The flags that override one configuration setting each, by parameter name. A command takes
# only those it uses (`config_options`), so its --help lists nothing it would ignore.
_SETTING_OPTIONS: Final = {
    "cluster": click.option(
        "--cluster", help="Cluster name; keys live under /ringside/<cluster>/."
    ),
    "etcd_endpoints": click.option(
        "--etcd-endpoints", metavar="URL[,URL...]", help="etcd client URLs."
    ),
    "cacert": click.option(
        "--cacert",
        type=click.Path(path_type=Path),
        help="CA bundle that signed etcd's certificates (etcd.tls.ca; etcdctl's name).",
    ),
    "cert": click.option(
        "--cert", type=click.Path(path_type=Path), help="Client certificate for etcd."
    ),
    "key": click.option("--key", type=click.Path(path_type=Path), help="Its private key."),
    "node_id": click.option(
        "--node-id", help="This node's id; overrides every other identity source."
    ),
    "inventory": click.option(
        "--inventory",
        type=click.Path(path_type=Path),
        help="The orchestrator's distributed_hosts.yaml.",
    ),
    "allow_unknown_node": click.option(
        "--allow-unknown-node",
        is_flag=True,
        help="Accept a node id that is not a host in the inventory.",
    ),
    "lease_ttl": click.option(
        "--lease-ttl", type=int, metavar="SECONDS", help="Membership lease TTL (2-600)."
    ),
    "http_listen": click.option(
        "--http-listen", metavar="HOST:PORT", help="Local HTTP API address."
    ),
    "leader_eligible": click.option(
        "--leader-eligible/--not-leader-eligible",
        default=None,
        help="Whether this node campaigns for leadership.",
    ),
    "lock_file": click.option(
        "--lock-file",
        type=click.Path(path_type=Path),
        help="Single-instance lock file (default /run/ringside/<cluster>.lock).",
    ),
}

# Groups of them, for `config_options`.
ETCD_TLS: Final = ("cacert", "cert", "key")
ETCD: Final = ("cluster", "etcd_endpoints", *ETCD_TLS)  # reaching etcd as this node does
NODE: Final = ("node_id", "inventory", "allow_unknown_node")  # who this node is
DAEMON: Final = ("lease_ttl", "http_listen", "leader_eligible", "lock_file")  # only `run` uses
EVERY_SETTING: Final = (*ETCD, *NODE, *DAEMON)


@dataclass(frozen=True)
class ConfigRequest:
    """The config file a command was pointed at and the config flags the user actually passed.

    `flags` is keyed by option name (``{"--lease-ttl": 30}``), as `load_config` expects.
    """

    path: Path | None
    flags: Mapping[str, object]

    def load(self, env: Mapping[str, str] | None = None) -> LoadedConfig:
        """Load and validate the configuration against `env` (default: the process's)."""
        from sidecar.config import load_config  # noqa: PLC0415  # pydantic: only when needed

        loaded = load_config(self.path, os.environ if env is None else env, self.flags)
        for warning in loaded.warnings:
            click.echo(f"ringside: warning: {warning}", err=True)
        return loaded


def node_etcd_user(loaded: LoadedConfig) -> str | None:
    """This node's own etcd user, for a password configured without `etcd.username`: commands
    that read etcd with a node's settings log in as its sidecar does (`open_store`). None
    when a username is set, there is no password, or the node id cannot be resolved."""
    etcd = loaded.config.etcd
    if etcd.username is not None or etcd.effective_password is None:
        return None
    from sidecar.identity import HostFacts, IdentityError, resolve_identity  # noqa: PLC0415
    from sidecar.keys import Keys  # noqa: PLC0415

    try:
        node_id = resolve_identity(loaded, os.environ, HostFacts.gather()).node_id
    except IdentityError:
        return None
    return Keys(loaded.config.cluster).etcd_user(node_id)


def config_options(
    *settings: str,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Add `--config` and the flags for `settings` (names from `_SETTING_OPTIONS`, e.g. the
    groups `ETCD`, `NODE`); the command receives them together as `config_request`.

    Only options given on the command line become flags, so a flag never hides an environment
    variable or a file setting the user did not mean to override.
    """
    unknown = set(settings) - set(_SETTING_OPTIONS)
    if unknown:
        raise ValueError(f"no such configuration option: {sorted(unknown)}")

    def decorate(command: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(command)
        def with_config_request(*args: Any, **kwargs: Any) -> Result:
            ctx = click.get_current_context()
            flags: dict[str, object] = {}
            for param in ctx.command.params:
                name = param.name
                if name in settings:
                    value = kwargs.pop(name)
                    if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                        flags[_option_name(param, value)] = value
            request = ConfigRequest(path=kwargs.pop("config_path"), flags=flags)
            return command(*args, config_request=request, **kwargs)

        decorated: Callable[..., Result] = with_config_request
        for name in reversed(EVERY_SETTING):
            if name in settings:
                decorated = _SETTING_OPTIONS[name](decorated)
        return _CONFIG_FILE_OPTION(decorated)

    return decorate


def output_option(
    *choices: str,
) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """`-o/--output CHOICE` (the first is the default), one grammar on every command that
    prints a document; `--json`, the older spelling, is kept hidden as `-o json`."""

    def decorate(command: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(command)
        def with_output(*args: Any, as_json: bool, output: str, **kwargs: Any) -> Result:
            return command(*args, output="json" if as_json else output, **kwargs)

        decorated: Callable[..., Result] = click.option(
            "--json", "as_json", is_flag=True, hidden=True, help="Same as -o json."
        )(with_output)
        return click.option(
            "-o",
            "--output",
            type=click.Choice(choices),
            default=choices[0],
            show_default=True,
            help=f"{choices[0]} for people; json for programs.",
        )(decorated)

    return decorate


def _option_name(param: click.Parameter, value: object) -> str:
    if value is False and isinstance(param, click.Option) and param.secondary_opts:
        return param.secondary_opts[0]
    return param.opts[0]


class _RingsideGroup(click.Group):
    """Turns operator mistakes into one stderr line and exit code 2, and a sidecar or etcd
    that does not answer (or answers garbage) into one stderr line and exit code 3."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as error:
            click.echo(f"ringside: error: {_one_line(error)}", err=True)
            ctx.exit(EXIT_CONFIG_ERROR)
        except NoAnswer as error:
            click.echo(f"ringside: {_one_line(error)}", err=True)
            ctx.exit(EXIT_UNREACHABLE)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).splitlines())


@click.group(cls=_RingsideGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ringside")
def ringside() -> None:
    """ringside: etcd-backed membership and leader election for the orchestrator."""
