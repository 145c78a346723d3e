"""The Prometheus side, checked with Prometheus' own tool: the sidecar's exposition passes
`promtool check metrics`; the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`); the alerts and the Grafana dashboard read only metrics the sidecar
really exports. `make test` installs promtool (scripts/ensure-promtool.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sidecar.compat import UTC
from sidecar.metrics import Metrics
from sidecar.store.memory import MemoryStore
from tests.agents import make_agent, running, until
from tests.paths import ROOT

RULES = ROOT / "deploy" / "prometheus" / "ringside.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "ringside.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "ringside.json"
METRIC_NAME = re.compile(r"\bringside_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is missing: run `make test` (scripts/ensure-promtool.sh installs it)")
    return subprocess.run(
        [tool, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
async def exposition(store: MemoryStore, cluster: str) -> bytes:
    """One scrape of a leading sidecar with every kind of series it can have: an
    orchestrator check, a certificate, an inventory host that is absent."""
    agent = make_agent(
        store, "n1", cluster, orchestrator={"health_url": "http://127.0.0.1:9/health"}
    )
    metrics = Metrics(
        agent,
        certificates={"client": datetime(2030, 1, 1, tzinfo=UTC)},
        inventory_hosts=("n1", "mac-studio"),
    )
    async with running(agent):
        await until(lambda: agent.leadership().is_leader)
        await until(
            lambda: b"ringside_keepalive_latency_seconds_count 0" not in metrics.render()[0]
        )
        body, _ = metrics.render()
    return body


def exported_names(exposition: bytes) -> set[str]:
    """Every series name a query may use: each family, with its type's suffixes."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition.decode()):
        suffixes = SUFFIXES.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


async def test_the_exposition_passes_promtool_check_metrics(exposition: bytes) -> None:
    checked = promtool("check", "metrics", stdin=exposition)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == checked.stderr == ""  # not even a lint warning


def test_the_rules_pass_promtool_check_rules() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    tested = promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules}  # each alert has a firing case


async def test_alerts_and_dashboard_read_only_exported_metrics(exposition: bytes) -> None:
    exported = exported_names(exposition)
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    dashboard = json.loads(DASHBOARD.read_text())
    queries = {f"alert {r['alert']}": r["expr"] for r in rules}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    assert len(queries) > 20
    unknown = {
        where: sorted(set(METRIC_NAME.findall(expr)) - exported)
        for where, expr in queries.items()
        if set(METRIC_NAME.findall(expr)) - exported
    }
    assert not unknown, unknown


def test_the_dashboard_covers_what_the_issue_asks() -> None:
    """Cluster overview, membership per node, leader and epoch, keepalives, orchestrators."""
    dashboard = json.loads(DASHBOARD.read_text())
    text = json.dumps(dashboard)
    for metric in (
        "ringside_is_leader",
        "ringside_epoch",
        "ringside_member_up",
        "ringside_keepalive_latency_seconds_bucket",
        "ringside_orchestrator_healthy",
        "ringside_quorum_ok",
    ):
        assert metric in text, metric
    assert all(isinstance(p["id"], int) for p in dashboard["panels"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-agent.yml"])
def test_the_example_configs_pass_promtool_check_config(tmp_path: Path, name: str) -> None:
    shutil.copy(RULES.parent / name, tmp_path / name)
    shutil.copy(RULES, tmp_path / RULES.name)  # the central config names it beside itself
    checked = promtool("check", "config", str(tmp_path / name))
    assert checked.returncode == 0, checked.stdout + checked.stderr
