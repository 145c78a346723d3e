"""Settings for one sidecar: defaults < YAML file < ``RINGSIDE_*`` environment < flags.

Example::

    loaded = load_config(None, os.environ, {"--lease-ttl": 30})
    loaded.config.lease_ttl         # 30
    loaded.sources["lease_ttl"]     # "flag --lease-ttl"
    loaded.sources["cluster"]       # "default"

Every problem surfaces as a one-line `ConfigError` naming the dotted field and the source of its
value. The models and their rules live in `sidecar.settings` and are re-exported here.
"""

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ValidationError

from sidecar.errors import ConfigError
from sidecar.settings import (
    EtcdSettings,
    HttpSettings,
    IdentitySettings,
    LeaderSettings,
    RingsideConfig,
    TlsSettings,
)
from sidecar.yaml_input import describe_validation_error, read_yaml_mapping

__all__ = [
    "CONFIG_ENV",
    "ENV_FIELDS",
    "FLAG_FIELDS",
    "ConfigError",
    "EtcdSettings",
    "HttpSettings",
    "IdentitySettings",
    "LeaderSettings",
    "LoadedConfig",
    "RingsideConfig",
    "TlsSettings",
    "load_config",
    "render_with_sources",
]

Layer = Literal["file", "env", "flag"]

CONFIG_ENV: Final = "RINGSIDE_CONFIG"

ENV_FIELDS: Final[Mapping[str, str]] = {
    "RINGSIDE_CLUSTER": "cluster",
    "RINGSIDE_NODE_ID": "node_id",
    "RINGSIDE_ETCD_ENDPOINTS": "etcd.endpoints",
    "RINGSIDE_ETCD_USERNAME": "etcd.username",
    "RINGSIDE_ETCD_PASSWORD_FILE": "etcd.password_file",
    "RINGSIDE_LEASE_TTL": "lease_ttl",
    "RINGSIDE_HTTP_LISTEN": "http.listen",
    "RINGSIDE_HTTP_TOKEN": "http.token",
    "RINGSIDE_HTTP_TOKEN_FILE": "http.token_file",
    "RINGSIDE_LEADER_ELIGIBLE": "leader.eligible",
    "RINGSIDE_INVENTORY": "inventory",
    "RINGSIDE_ADVERTISE_ADDRESSES": "advertise_addresses",
    "RINGSIDE_LOCK_FILE": "lock_file",
    "RINGSIDE_ORCHESTRATOR_HEALTH_URL": "orchestrator.health_url",
    # etcdctl's names for the same files (ETCDCTL_CACERT, --cacert, ...)
    "RINGSIDE_ETCD_CACERT": "etcd.tls.ca",
    "RINGSIDE_ETCD_CERT": "etcd.tls.cert",
    "RINGSIDE_ETCD_KEY": "etcd.tls.key",
}
"""Environment variable -> dotted field. Operators rely on these names: never rename one."""

FLAG_FIELDS: Final[Mapping[str, str]] = {
    "--cluster": "cluster",
    "--node-id": "node_id",
    "--etcd-endpoints": "etcd.endpoints",
    "--etcd": "etcd.endpoints",  # `status`, `events`, `flaps`: read etcd at these endpoints
    "--lease-ttl": "lease_ttl",
    "--http-listen": "http.listen",
    "--leader-eligible": "leader.eligible",
    "--not-leader-eligible": "leader.eligible",
    "--inventory": "inventory",
    "--allow-unknown-node": "identity.allow_unknown_node",
    "--lock-file": "lock_file",
    "--cacert": "etcd.tls.ca",
    "--cert": "etcd.tls.cert",
    "--key": "etcd.tls.key",
}
"""Command-line option -> dotted field; `load_config` takes flags keyed by option name."""

_LIST_FIELDS: Final = frozenset({"etcd.endpoints", "advertise_addresses"})
_BOOL_FIELDS: Final = frozenset({"leader.eligible"})
_SECRET_LEAVES: Final = frozenset({"etcd.password", "http.token"})
_BOOL_WORDS: Final = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration, where each leaf setting came from, and what each layer offered.

    `sources` maps every dotted leaf ("etcd.endpoints") to "default", "file <path>",
    "env <NAME>" or "flag <--option>". `layers` keeps the raw values the file, the environment
    and the flags offered, including those a higher layer overrode (identity reports them all).
    """

    config: RingsideConfig
    path: Path | None
    sources: Mapping[str, str]
    layers: Mapping[Layer, Mapping[str, object]]
    warnings: tuple[str, ...] = ()  # one sentence each, e.g. a misspelt RINGSIDE_* variable

    def offered(self, layer: Layer, field: str) -> object | None:
        """The raw value `layer` gave for dotted `field`, or None if it gave none."""
        return self.layers[layer].get(field)


OTHER_ENV_NAMES: Final = frozenset(
    {
        # what role hooks get (a hook may well run `ringside status`)
        "RINGSIDE_EVENT", "RINGSIDE_EPOCH", "RINGSIDE_LEADER", "RINGSIDE_REASON",
        "RINGSIDE_REASON_DETAIL",
        # the command line's own, and the deployment and test scripts'
        "RINGSIDE_SIDECAR", "RINGSIDE_SECRETS", "RINGSIDE_SECRETS_DIR", "RINGSIDE_LOCAL_STATE",
        "RINGSIDE_DIR", "RINGSIDE_IMAGE", "RINGSIDE_IMAGE_CACHE", "RINGSIDE_DOCKERD_DIR",
        "RINGSIDE_DOCKERD_WAIT_S", "RINGSIDE_DEBIAN_MIRROR", "RINGSIDE_ETCD_BINARY",
    }
)  # fmt: skip
"""`RINGSIDE_*` names that are no configuration setting but are not mistakes either."""

_SECRET_IN_ENV: Final = {
    "RINGSIDE_ETCD_PASSWORD": "RINGSIDE_ETCD_PASSWORD_FILE",
}


def env_warnings(env: Mapping[str, str]) -> tuple[str, ...]:
    """A sentence for each `RINGSIDE_*` variable ringside does not know: a misspelt one
    (`RINGSIDE_LEASE_TLL`) would otherwise be ignored without a word, while a misspelt file
    key is an error. Names close to a setting get a did-you-mean."""
    known = (*ENV_FIELDS, CONFIG_ENV)
    found = []
    for name in sorted(env):
        if (
            not name.startswith("RINGSIDE_")
            or name in ENV_FIELDS
            or name in OTHER_ENV_NAMES
            or name == CONFIG_ENV
            or name.startswith("RINGSIDE_TEST_")
            or name in _SECRET_IN_ENV
        ):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else " (ignored)"
        found.append(f"{name} is not a ringside setting{hint}")
    return tuple(found)


DEFAULT_CONFIG_FILE: Final = Path("/etc/ringside/ringside.yaml")
"""Read when neither --config nor RINGSIDE_CONFIG names a file and it exists: a node set up by
deploy/ has its settings there, so `ringside etcd` no longer dials 127.0.0.1:2379 unasked."""


def load_config(
    path: Path | None, env: Mapping[str, str], flags: Mapping[str, object]
) -> LoadedConfig:
    """Merge defaults, the YAML file, ``RINGSIDE_*`` variables and flags, then validate.

    `path` is the ``--config`` flag; without it ``RINGSIDE_CONFIG`` names the file, then
    `DEFAULT_CONFIG_FILE` when it exists; without any, only defaults, environment and flags
    apply. `flags` holds only the options the user
    actually passed, keyed by option name (see FLAG_FIELDS). Empty variables count as unset.
    """
    present = {name: value.strip() for name, value in env.items() if value.strip()}
    for name, instead in _SECRET_IN_ENV.items():
        if name in present:
            raise ConfigError(
                f"{name} is not read: ringside takes secrets from files only (decision 0013); "
                f"put the password in a 0600 file and set {instead}"
            )
    if path is None and CONFIG_ENV in present:
        path = Path(present[CONFIG_ENV])
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    offered: dict[Layer, dict[tuple[str, ...], object]] = {"file": {}, "env": {}, "flag": {}}
    sources: dict[tuple[str, ...], str] = {}
    if path is not None:
        offered["file"] = _flatten(RingsideConfig, read_yaml_mapping(path, "config file"))
        sources.update(dict.fromkeys(offered["file"], f"file {path}"))
    for name, field in ENV_FIELDS.items():
        if name in present:
            _offer(offered["env"], sources, field, present[name], f"env {name}")
    for option, value in flags.items():
        _offer(offered["flag"], sources, FLAG_FIELDS[option], value, f"flag {option}")
    merged = {**offered["file"], **offered["env"], **offered["flag"]}
    try:
        config = RingsideConfig.model_validate(_nest(merged))
    except ValidationError as e:
        line = describe_validation_error(e, lambda loc: _source_of(sources, loc))
        raise ConfigError(line) from e
    labels = {".".join(key): label for key, label in sources.items()}
    leaf_sources = {leaf: labels.get(leaf, "default") for leaf in _leaves(config)}
    layers = {
        layer: {".".join(key): value for key, value in values.items()}
        for layer, values in offered.items()
    }
    return LoadedConfig(
        config=config,
        path=path,
        sources=leaf_sources,
        layers=layers,
        warnings=env_warnings(env),
    )


def _offer(
    layer: dict[tuple[str, ...], object],
    sources: dict[tuple[str, ...], str],
    field: str,
    value: object,
    label: str,
) -> None:
    if isinstance(value, str):
        value = value.strip()
        if field in _LIST_FIELDS:
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif field in _BOOL_FIELDS:
            if value.lower() not in _BOOL_WORDS:
                expected = "expected true/false/1/0/yes/no"
                raise ConfigError(f"{field} ({label}): {expected}, got {value!r}")
            value = _BOOL_WORDS[value.lower()]
    key = tuple(field.split("."))
    layer[key] = value
    sources[key] = label


def _section_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    """The settings model a field holds (``etcd`` -> EtcdSettings), or None for a leaf."""
    field = model.model_fields.get(name)
    if field is None:
        return None
    for candidate in (field.annotation, *get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _flatten(
    model: type[BaseModel], data: Mapping[Any, Any], prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], object]:
    """Leaf paths of a file's mapping; unknown keys stay leaves so validation names them."""
    flat: dict[tuple[str, ...], object] = {}
    for key, value in data.items():
        path = (*prefix, str(key))
        section = _section_model(model, str(key))
        if section is not None and isinstance(value, dict) and value:
            flat.update(_flatten(section, value, path))
        else:
            flat[path] = value
    return flat


def _nest(flat: Mapping[tuple[str, ...], object]) -> dict[str, Any]:
    """The nested mapping pydantic validates; a scalar given for a section is left to fail."""
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value
    return nested


def _source_of(sources: Mapping[tuple[str, ...], str], loc: tuple[int | str, ...]) -> str:
    """The source of the nearest enclosing setting of `loc` that a layer provided."""
    names = tuple(str(part) for part in loc if isinstance(part, str))
    for end in range(len(names), 0, -1):
        if names[:end] in sources:
            return sources[names[:end]]
    return "default"


def _leaves(model: BaseModel, prefix: str = "") -> Iterator[str]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def render_with_sources(loaded: LoadedConfig) -> str:
    """The effective configuration as YAML, each leaf followed by ``# <its source>``.

    Secrets (the etcd password, the HTTP token) print as ``"***"``. Values are written in
    JSON's flow syntax, which is also YAML, so apart from those secrets the output loads back
    as the same configuration.
    """
    from sidecar.api_token import token_path  # noqa: PLC0415
    from sidecar.lock import default_lock_path  # noqa: PLC0415

    config = loaded.config
    lock = config.lock_file or default_lock_path(config.cluster)
    derived = {  # what a null here means on this host, shown beside it
        "lock_file": lock,
        "http.token_file": token_path(config.http.token_file, lock),
    }
    sources = {
        field: f"{source}: {derived[field]}" if field in derived and source == "default" else source
        for field, source in loaded.sources.items()
    }
    lines: list[str] = []
    _render_model(config, "", sources, lines)
    return "\n".join(lines) + "\n"


def config_document(loaded: LoadedConfig) -> dict[str, Any]:
    """The effective configuration and each setting's source, for `ringside config -o json`:
    the same values `render_with_sources` prints, secrets as ``"***"``."""
    document: dict[str, Any] = loaded.config.model_dump(mode="json")
    for leaf in _SECRET_LEAVES:
        *parents, name = leaf.split(".")
        holder = document
        for parent in parents:
            holder = holder[parent]
        if holder.get(name) is not None:
            holder[name] = "***"
    return {"config": document, "sources": dict(sorted(loaded.sources.items()))}


def _render_model(
    model: BaseModel, prefix: str, sources: Mapping[str, str], lines: list[str]
) -> None:
    indent = "  " * prefix.count(".")
    for name in type(model).model_fields:
        value = getattr(model, name)
        field = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{name}:")
            _render_model(value, f"{field}.", sources, lines)
            continue
        if value is not None and field in _SECRET_LEAVES:
            value = "***"
        text = json.dumps(value, default=str, ensure_ascii=False)
        lines.append(f"{indent}{name}: {text}  # {sources.get(field, 'default')}")
