"""`ringside auth ...`: the operator's commands for etcd users, one per node (rule 15).

    export RINGSIDE_SECRETS_DIR=/root/ringside-secrets
    ringside auth init --eligible hetzner-cpu1,hetzner-cpu2,hetzner-cpu3
    ringside auth add vast-29118471
    ringside auth rotate vast-29118471
    ringside auth remove vast-29118471
    ringside auth show

The secrets directory (mode 0700) holds `root.password` and one `<node_id>.password` per node
(mode 0600); copy each node's file to that node only, and point its `etcd.password_file` at it.
`remove` takes a node's keys and leases away at once and moves its file aside, so a password
that may have leaked is never handed out again.
Every command is idempotent and prints what it changed ("unchanged" when nothing). Exit codes:
0 done, 1 etcd refused (wrong root password, a node that does not exist), 2 usage or
configuration, 3 etcd did not answer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from sidecar.cli.base import ETCD, EXIT_DEGRADED, ConfigRequest, config_options, ringside
from sidecar.cli.reports import NoAnswer
from sidecar.compat import UTC
from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from sidecar.cli.etcd_access import Access
    from sidecar.settings import RingsideConfig

T = TypeVar("T")
ROOT_FILE = "root.password"
SECRETS_ENV = "RINGSIDE_SECRETS_DIR"

_SECRETS = click.option(
    "--secrets",
    "secrets_dir",
    envvar=SECRETS_ENV,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the password files (root.password, <node_id>.password); "
    "$RINGSIDE_SECRETS_DIR.",
)


class EtcdUnreachable(NoAnswer):
    """etcd did not answer the operator's command."""


@ringside.group("auth")
def auth() -> None:
    """etcd users and roles: one per node, each able to write only its own keys."""


def _node_ids(value: str) -> list[str]:
    from sidecar.settings import DNS_LABEL  # noqa: PLC0415

    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        if not DNS_LABEL.fullmatch(name):
            raise ConfigError(f"{name!r} is not a node id")
    return names


@auth.command("init")
@_SECRETS
@click.option(
    "--eligible",
    required=True,
    metavar="NODE[,NODE...]",
    help="The leader-eligible nodes (they may also write election/<node_id>).",
)
@click.option(
    "--node",
    "nodes",
    multiple=True,
    metavar="NODE",
    help="A node to create a user for (repeatable; default: every inventory host).",
)
@click.option(
    "--enable/--no-enable",
    default=True,
    show_default=True,
    help="Turn auth on at the end. --no-enable on a live cluster: hand out the passwords and "
    "restart the sidecars with them first, then run again with --enable.",
)
@config_options(*ETCD, "inventory")
def init(
    config_request: ConfigRequest,
    secrets_dir: Path,
    eligible: str,
    nodes: Sequence[str],
    enable: bool,
) -> None:
    """Set up etcd auth: root, one user and role per node with a generated password, then
    `auth enable`. Run again to add what is missing; existing passwords are kept."""
    config = config_request.load().config
    wanted = _node_ids(",".join(nodes)) if nodes else _inventory_hosts(config)
    leaders = _node_ids(eligible)
    unknown = sorted(set(leaders) - set(wanted))
    if unknown:
        raise ConfigError(f"--eligible names nodes that get no user: {', '.join(unknown)}")
    _private_dir(secrets_dir)

    async def run(access: Access) -> list[str]:
        done = await access.ensure_root(_read_or_create(secrets_dir / ROOT_FILE))
        for node_id in wanted:
            done += await _ensure_node(access, secrets_dir, node_id, eligible=node_id in leaders)
        if enable:
            done += await access.enable()
        return done

    _report(_as_root(config, secrets_dir, run, before_auth=True))


@auth.command("add")
@click.argument("node", metavar="NODE")
@_SECRETS
@click.option(
    "--eligible/--not-eligible",
    default=False,
    show_default=True,
    help="Whether the node may campaign (write election/<node_id>).",
)
@config_options(*ETCD, "inventory")
def add(config_request: ConfigRequest, node: str, secrets_dir: Path, eligible: bool) -> None:
    """Create (or correct) one node's user and role; its password goes to
    <secrets>/<node>.password unless that file exists."""
    node_id = _one_node(node)
    config = config_request.load().config
    _private_dir(secrets_dir)

    async def run(access: Access) -> list[str]:
        return await _ensure_node(access, secrets_dir, node_id, eligible=eligible)

    _report(_as_root(config, secrets_dir, run))


@auth.command("rotate")
@click.argument("node", metavar="NODE")
@_SECRETS
@config_options(*ETCD, "inventory")
def rotate(config_request: ConfigRequest, node: str, secrets_dir: Path) -> None:
    """Give one node a new password (written to <secrets>/<node>.password). etcd drops the
    tokens of the old one, so the node's next request is refused: copy the new file to it and
    restart its sidecar."""
    from sidecar.cli.etcd_access import generate_password  # noqa: PLC0415

    node_id = _one_node(node)
    config = config_request.load().config
    _private_dir(secrets_dir)
    password = generate_password()

    async def run(access: Access) -> list[str]:
        if access.user_of(node_id) not in await access.users():
            raise ConfigError(f"etcd has no user for node {node_id}: add it first")
        await access.set_password(node_id, password)
        _write_private(secrets_dir / f"{node_id}.password", password)
        return [f"new password for {access.user_of(node_id)} in {secrets_dir}/{node_id}.password"]

    _report(_as_root(config, secrets_dir, run))


@auth.command("remove")
@click.argument("node", metavar="NODE")
@_SECRETS
@config_options(*ETCD, "inventory")
def remove(config_request: ConfigRequest, node: str, secrets_dir: Path) -> None:
    """Revoke a node at once: delete its user and role, revoke the leases its keys are on and
    delete its keys (members/, election/, switchover/<node>...), and move its password file
    aside, so that a later `auth add` makes a new password. Run again: "already removed"."""
    node_id = _one_node(node)
    config = config_request.load().config
    _private_dir(secrets_dir)

    async def run(access: Access) -> list[str]:
        return await access.remove_node(node_id)

    done = _as_root(config, secrets_dir, run) + _retire_password(secrets_dir, node_id)
    if not done:
        done = [
            f"unchanged: {node_id} is already removed (no etcd user, role or keys, no "
            f"{node_id}.password)"
        ]
    _report(done)


@auth.command("show")
@_SECRETS
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@config_options(*ETCD, "inventory")
def show(config_request: ConfigRequest, secrets_dir: Path, output: str) -> None:
    """Who can do what: every etcd user, its roles and what they allow."""
    config = config_request.load().config

    async def run(access: Access) -> list[str]:
        grants = await access.grants()
        if output == "json":
            rows = [
                {
                    "user": g.user,
                    "roles": list(g.roles),
                    "permissions": [p.describe() for p in g.permissions],
                }
                for g in grants
            ]
            return [json.dumps({"users": rows})]
        lines = []
        for grant in grants:
            allowed = (
                "everything"
                if "root" in grant.roles
                else "; ".join(p.describe() for p in grant.permissions) or "nothing"
            )
            lines.append(f"{grant.user:<40} {allowed}")
        return lines

    for line in _as_root(config, secrets_dir, run):
        click.echo(line)


# --- helpers -----------------------------------------------------------------------------


def _one_node(value: str) -> str:
    names = _node_ids(value)
    if len(names) != 1:
        raise ConfigError(f"{value!r} is not one node id")
    return names[0]


async def _ensure_node(
    access: Access, secrets_dir: Path, node_id: str, *, eligible: bool
) -> list[str]:
    """The node's user and role. A new user gets the password in its file (made when
    missing); an existing one keeps its password, and a missing file is reported, never
    replaced by one that etcd does not know."""
    path = secrets_dir / f"{node_id}.password"
    if access.user_of(node_id) in await access.users():
        done = await access.ensure_node(node_id, eligible=eligible)
        if not path.exists():
            done.append(f"{path} is missing: `ringside auth rotate {node_id}` makes a new one")
        return done
    return await access.ensure_node(node_id, eligible=eligible, password=_read_or_create(path))


def _inventory_hosts(config: RingsideConfig) -> list[str]:
    from sidecar.inventory import load_inventory  # noqa: PLC0415

    if config.inventory is None:
        raise ConfigError("no inventory configured: name the nodes with --node")
    return sorted(load_inventory(config.inventory).hosts)


def _as_root(
    config: RingsideConfig,
    secrets_dir: Path,
    run: Callable[[Access], Awaitable[T]],
    *,
    before_auth: bool = False,
) -> T:
    """Run `run` against etcd logged in as root (anonymous first when `before_auth` and etcd
    does not check credentials yet); one-line errors, exit 1 or 3."""
    import asyncio  # noqa: PLC0415  # `ringside status` imports this module, and not asyncio

    from sidecar.cli.etcd_access import Access  # noqa: PLC0415
    from sidecar.etcd_connection import open_store  # noqa: PLC0415
    from sidecar.keys import Keys  # noqa: PLC0415
    from sidecar.store.errors import StoreError, StoreUnavailable  # noqa: PLC0415

    root_file = secrets_dir / ROOT_FILE

    async def attempt() -> T:
        anonymous = open_store(config.etcd, credentials=("", ""))
        try:
            enabled = await Access(anonymous.gateway, Keys(config.cluster)).auth_enabled()
            if before_auth and not enabled:
                return await run(Access(anonymous.gateway, Keys(config.cluster)))
        finally:
            await anonymous.close()
        if not enabled:
            raise ConfigError("etcd auth is not enabled yet: run `ringside auth init` first")
        store = open_store(config.etcd, credentials=("root", _read_secret(root_file)))
        try:
            return await run(Access(store.gateway, Keys(config.cluster)))
        finally:
            await store.close()

    try:
        return asyncio.run(attempt())
    except StoreUnavailable as e:
        raise EtcdUnreachable(f"cannot reach etcd: {e}") from None
    except StoreError as e:
        click.echo(f"ringside: etcd refused: {' '.join(str(e).splitlines())}", err=True)
        raise SystemExit(EXIT_DEGRADED) from None


def _report(done: list[str]) -> None:
    click.echo("\n".join(done) if done else "unchanged")


def _private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {path}: {e.strerror}") from None
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 700 it first")


def _retire_password(secrets_dir: Path, node_id: str) -> list[str]:
    """Move a removed node's password file aside (`<file>.removed-<UTC time>`, mode kept):
    the node's host may still hold it, so `auth add` must not find and reuse it."""
    path = secrets_dir / f"{node_id}.password"
    if not path.exists():
        return []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        aside = path.with_name(f"{path.name}.removed-{stamp}" + (f".{attempt}" if attempt else ""))
        try:
            os.link(path, aside)  # never replaces an older one, unlike a rename
        except FileExistsError:
            continue
        except OSError as e:
            raise ConfigError(f"cannot move {path} aside: {e.strerror or e}") from None
        path.unlink()
        return [
            f"moved {path} aside to {aside.name}: `ringside auth add {node_id}` makes a new one"
        ]
    raise ConfigError(f"cannot move {path} aside: too many {aside.name} files")


def _read_secret(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    if not secret:
        raise ConfigError(f"{path} is empty")
    return secret


def _read_or_create(path: Path) -> str:
    """The password in `path`, or a new one written there (mode 0600) when it is missing."""
    from sidecar.cli.etcd_access import generate_password  # noqa: PLC0415

    if path.exists():
        return _read_secret(path)
    password = generate_password()
    _write_private(path, password)
    return password


def _write_private(path: Path, secret: str) -> None:
    from sidecar.files import write_private  # noqa: PLC0415

    try:
        write_private(path, secret)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}") from None
