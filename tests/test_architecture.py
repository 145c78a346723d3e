"""The layout keeps its promises (docs/decisions/0009): the command line stays light, the test
bed stays out of the product, and the read model is the only way to the agent's state.

Each check reads the real code (its imports, its syntax tree) or runs the real command, so a
change that breaks a promise fails here with the module and line that broke it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.cli_support import clean_env
from tests.fleet import Fleet

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sidecar"

# What `ringside status` must not load: the HTTP and validation libraries, asyncio (about 60 ms
# on this machine), and the whole daemon core (all of sidecar/ but the CLI and what it shares).
HEAVY = ("aiohttp", "pydantic", "psutil", "prometheus_client", "yaml", "asyncio")
CLI_MAY_LOAD = {
    "sidecar",
    "sidecar.compat",
    "sidecar.errors",
    "sidecar.events",
    "sidecar.flaps",
}  # stdlib

SHOW_MODULES = """
import json, sys
from sidecar.cli import main
sys.argv = ["ringside", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_loaded_by(*args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    result = subprocess.run(
        [sys.executable, "-c", SHOW_MODULES, *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES "))), result


def sidecar_modules(loaded: set[str]) -> set[str]:
    return {m for m in loaded if m == "sidecar" or m.startswith("sidecar.")}


async def test_ringside_status_loads_neither_aiohttp_nor_the_daemon_core(fleet: Fleet) -> None:
    sidecar = fleet.add("n1")
    await fleet.wait_converged(("n1",), within_s=20, leader_among=("n1",))
    for args in (
        ("status", "--sidecar", sidecar.url),
        ("status", "-o", "json", "--sidecar", sidecar.url),
    ):
        loaded, result = modules_loaded_by(*args)
        assert result.returncode == 0, result.stderr
        assert "n1" in result.stdout  # it did read and show the cluster
        heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
        assert heavy == [], f"`ringside {' '.join(args[:3])}` loaded {heavy}"
        core = sorted(
            m
            for m in sidecar_modules(loaded)
            if m not in CLI_MAY_LOAD and not m.startswith("sidecar.cli")
        )
        assert core == [], f"`ringside status` loaded daemon modules {core}"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports (absolute names), with its line, lazy imports included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def product_modules() -> list[Path]:
    """Every module of the daemon and the CLI: all of sidecar/ but the test bed."""
    return [
        p for p in sorted(PACKAGE.rglob("*.py")) if "testing" not in p.relative_to(PACKAGE).parts
    ]


def test_nothing_in_the_daemon_or_the_cli_imports_the_test_bed() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in product_modules()
        for line, name in imports_of(path)
        if name == "sidecar.testing" or name.startswith("sidecar.testing.")
    ]
    assert offenders == []


def test_the_event_module_is_standard_library_only() -> None:
    """The daemon and the CLI share it, and `ringside status` must start fast."""
    stdlib = (set(sys.stdlib_module_names) | {"__future__"}) - {"asyncio"}
    foreign = [
        f"line {line}: {name}"
        for line, name in imports_of(PACKAGE / "events.py")
        if name.split(".")[0] not in stdlib
    ]
    assert foreign == []


def test_dependencies_point_one_way() -> None:
    """store <- records and view <- coordination <- agent <- api; the CLI apart."""
    never = {
        "sidecar/store": (
            "sidecar.records",
            "sidecar.view",
            "sidecar.agent",
            "sidecar.api",
            "sidecar.cli",
            "sidecar.settings",
        ),
        "sidecar/records.py": (
            "sidecar.view",
            "sidecar.membership",
            "sidecar.agent",
            "sidecar.orchestrator",
            "aiohttp",
            "psutil",
        ),
        "sidecar/view.py": (
            "sidecar.membership",
            "sidecar.election",
            "sidecar.agent",
            "aiohttp",
            "psutil",
        ),
        "sidecar/events.py": ("sidecar.",),
        "sidecar/agent.py": ("sidecar.api", "sidecar.metrics", "sidecar.daemon", "sidecar.cli"),
        "sidecar/state.py": ("sidecar.agent",),
        "sidecar/api": ("sidecar.cli", "sidecar.daemon"),
        "sidecar/metrics.py": ("sidecar.api", "sidecar.cli"),
    }
    offenders = []
    for where, forbidden in never.items():
        base = ROOT / where
        for path in sorted(base.rglob("*.py")) if base.is_dir() else [base]:
            for line, name in imports_of(path):
                if any(
                    name == f or name.startswith(f if f.endswith(".") else f + ".")
                    for f in forbidden
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert offenders == []


# The agent's state that the read model (`NodeState`) carries: the API and metrics read it
# from `agent.state()`, never from these attributes.
STATE_ATTRIBUTES = {
    "session",
    "guard",
    "store",
    "view",
    "health",
    "keeper",
    "quorum",
    "orchestrator",
    "conflict",
    "registered",
    "retiring",
    "stopping",
    "last_cycle",
    "member",
    "candidacy",
    "confirmed_age",
    "stale_for",
}
READERS = ("api/server.py", "api/bodies.py", "metrics.py")


def test_the_api_and_metrics_reach_the_agent_only_through_its_read_model() -> None:
    offenders = []
    for name in READERS:
        path = PACKAGE / name
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in STATE_ATTRIBUTES:
                owner = ast.unparse(node.value)
                if owner == "agent" or owner.endswith(".agent"):
                    offenders.append(f"{name}:{node.lineno} reads {ast.unparse(node)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "setattr"):
                offenders.append(f"{name}:{node.lineno} calls {ast.unparse(node.func)}")
    assert offenders == []


# Reflection by field name, none of it on another object's state: pydantic settings read by
# name (config, settings), a compare on a key's field (memory store), an exception's reason.
GETATTR_ALLOWED = {"config.py", "settings.py", "store/memory.py", "cli/local_api.py"}


# Attribute assignments an API leaves no other way to make, on an object made right there.
ASSIGNMENT_ALLOWED = {("cli/guard.py", "server_ssl.verify_mode")}  # ssl: require client certs


def test_no_module_rewires_or_pokes_into_another_object() -> None:
    """No attribute assignment on another object (metrics once replaced `agent.events.add`
    on the instance), no getattr to reach state outside a contract."""
    offenders = []
    for path in product_modules():
        name = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and isinstance(part.ctx, ast.Store):
                        owner = part.value
                        mine = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                        if not mine and (name, ast.unparse(part)) not in ASSIGNMENT_ALLOWED:
                            offenders.append(f"{name}:{part.lineno} assigns {ast.unparse(part)}")
            if (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) in ("getattr", "setattr")
                and name not in GETATTR_ALLOWED
            ):
                offenders.append(f"{name}:{node.lineno} calls {ast.unparse(node.func)}")
    assert offenders == []
