"""The ``ringside`` command line.

Every command takes `--config` and the setting flags it uses (`config_options`), and every operator
mistake (a `ConfigError`, which includes identity and inventory errors) ends the same way: one
``ringside: error: ...`` line on stderr and exit code 2, never a traceback. Click's own usage
errors exit 2 as well. A sidecar or etcd that does not answer, or answers something that is
not the document it promises, is one ``ringside: ...`` line and exit code 3.

`status`, `members`, `leader` and `resign` must start fast (an operator types them, scripts
poll them): their import path is the standard library, click and `sidecar.cli.local_api`; everything
that pulls in pydantic, aiohttp or the agent is imported inside the command that needs it.

Example::

    $ ringside identity --node-id hetzner-cpu1
    $ RINGSIDE_LEASE_TTL=30 ringside config --check
    $ ringside status -o wide
    $ ringside status --etcd https://203.0.113.21:2379 --watch
"""

from sidecar.cli import access, cluster, doctor, guard, history, node, shadow  # noqa: F401  # registers commands
from sidecar.cli.base import (
    EXIT_CONFIG_ERROR,
    EXIT_DEGRADED,
    EXIT_UNREACHABLE,
    ConfigRequest,
    config_options,
    ringside,
)

__all__ = [
    "EXIT_CONFIG_ERROR",
    "EXIT_DEGRADED",
    "EXIT_UNREACHABLE",
    "ConfigRequest",
    "config_options",
    "main",
    "ringside",
]


def main() -> None:
    """Console entry point of the ``ringside`` script."""
    ringside(prog_name="ringside")
