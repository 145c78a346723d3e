"""Read operator-written YAML files and turn their mistakes into one-line errors.

Both the sidecar's own config file and the orchestrator's inventory are hand-edited YAML. Each
mistake in them must reach the operator as a single line that points at the file and line (for
syntax errors) or at the dotted field and where its value came from (for validation errors).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from sidecar.errors import ConfigError
from sidecar.files import UnfitFile, read_text

_SECRET_FIELDS = frozenset({"password", "token"})
_SELF_DESCRIBING = frozenset({"ringside", "value_error"})
"""Error types whose message is ours and already quotes the value where that helps."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: the silent
    last-one-wins rule would let `lease_ttl: 5` further down undo an operator's edit."""


def _refuse_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges; explicit keys may override merged ones
        key = loader.construct_object(key_node)
        try:
            line = first_line.setdefault(key, key_node.start_mark.line)
        except TypeError:
            continue  # an unhashable key; construct_mapping reports it
        if line != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {line + 1})",
                key_node.start_mark,
            )  # fmt: skip
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _refuse_duplicate_keys
)

MAX_YAML_BYTES = 1024 * 1024  # the real inventory is a few kB; a config, less


def read_yaml_mapping(
    path: Path, what: str, error: type[ConfigError] = ConfigError
) -> dict[str, Any]:
    """Parse `path` as YAML whose top level is a mapping; an empty file is an empty mapping.

    `what` names the file in messages ("config file", "inventory"), e.g.
    ``config file /x.yaml line 4: mapping values are not allowed here``.
    """
    try:
        text = read_text(path, limit=MAX_YAML_BYTES)
    except UnfitFile as e:
        raise error(f"cannot read {what} {path}: {e.reason}") from e
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise error(f"cannot read {what} {path}: not UTF-8 text") from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = e.problem or e.context or "invalid YAML"
        raise error(f"{what} {path}{where}: {problem}") from e
    except yaml.YAMLError as e:
        raise error(f"{what} {path}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path}: the top level must be a mapping, not {_kind(data)}")
    return data


def dotted(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as a path: ``('etcd', 'endpoints', 1)`` -> ``etcd.endpoints[1]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def error_location(error: ErrorDetails) -> tuple[int | str, ...]:
    """Where an error points: its loc, extended by a ``loc`` our own validators put in ctx.

    Cross-field checks run in model validators, whose errors pydantic files under the model; the
    extra ctx entry moves them onto the field the operator has to change.
    """
    extra = (error.get("ctx") or {}).get("loc", ())
    return tuple(error["loc"]) + tuple(extra)


def describe_validation_error(
    exc: ValidationError, source_of: Callable[[tuple[int | str, ...]], str]
) -> str:
    """One line for the first error in `exc`: the field, its source, the problem.

    `source_of` maps a location to where its value came from ("env RINGSIDE_LEASE_TTL").
    """
    errors = exc.errors()
    first = errors[0]
    loc = error_location(first)
    field = dotted(loc) or "settings"
    source = source_of(loc)
    if first["type"] == "extra_forbidden":
        line = f"unknown key '{field}' in {source}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        line = f"{field} ({source}): {message}{_shown_input(first, loc)}"
    related = (first.get("ctx") or {}).get("related")
    if isinstance(related, str):
        line += f" ({related} from {source_of(tuple(related.split('.')))})"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more)"
    return line


def _shown_input(error: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    value = error.get("input")
    if error["type"] in _SELF_DESCRIBING or not isinstance(value, str | int | float | bool):
        return ""
    if any(part in _SECRET_FIELDS for part in loc):
        return ""
    return f", got {value!r}"


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"
