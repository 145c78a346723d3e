"""The chaos campaign (`chaos/`): its checks on made-up claims (each must fire on the bug it
is for and stay quiet on what the campaign itself caused), its plan, its reports, and a short
real campaign: three rounds of a fixed seed on real sidecars and the test etcd."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import bench.report
import chaos.converge
import chaos.findings
import chaos.plan
import chaos.report
from chaos.campaign import Campaign, Options
from chaos.claims import ClaimChecks
from chaos.findings import Findings
from chaos.plan import ALL_FAULTS, Fault, compatible, make_plan, parse_faults
from chaos.probe import Answer, Prober
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import Fleet, Sidecar
from tests.paths import ROOT

TTL, MARGIN = 5.0, 2.0


@pytest.mark.parametrize(
    "module", [chaos.converge, chaos.findings, chaos.plan, chaos.report, bench.report]
)
def test_doctests(module: Any) -> None:
    failures, tried = doctest.testmod(module)
    assert tried > 0
    assert failures == 0


# --- the checks ----------------------------------------------------------------------------


@pytest.fixture
def findings() -> Findings:
    return Findings(seed=7, started=0.0, echo=False)


@pytest.fixture
def checks(findings: Findings, tmp_path: Path) -> ClaimChecks:
    fleet = Fleet(cast(LocalEtcdCluster, None), tmp_path)  # only named, never started
    return ClaimChecks(fleet, findings, ttl=TTL, margin=MARGIN)


def leader(node: str, epoch: int, at: float, valid: float | None, *, leader_id: str = "") -> Answer:
    """A `/v1/leader` answer received 2 ms after it was asked at `at`; a claim with `valid`."""
    body: dict[str, Any] = {
        "leader": leader_id or node,
        "epoch": epoch,
        "is_self": valid is not None,
    }
    if valid is not None:
        body["valid_for_s"] = valid
    return Answer(200, body, at, at + 0.002)


def checks_failed(findings: Findings) -> list[str]:
    return [f.check for f in findings.items]


def test_two_leaders_with_overlapping_validity_are_a_violation(
    checks: ClaimChecks, findings: Findings
) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    checks.leader_answer("b", leader("b", 12, at=2.0, valid=3.0))  # a promised until 3.5
    assert checks_failed(findings) == ["overlapping-validity"]
    assert "for 1.498 s at once" in findings.items[0].detail


def test_a_new_leader_after_the_old_promise_ended_is_fine(
    checks: ClaimChecks, findings: Findings
) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    checks.leader_answer("b", leader("b", 12, at=3.6, valid=3.0))
    assert findings.items == []


@pytest.mark.parametrize("how", ["resign", "sigterm"])
def test_the_campaigns_own_stop_ends_a_promise_at_once(
    checks: ClaimChecks, findings: Findings, how: str
) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    if how == "resign":
        ending = checks.resigning("a", 1.5)
        checks.leader_answer("a", leader("a", 10, at=1.51, valid=1.9))  # asked mid-resign
        checks.resigned(ending, 1.52, 10)
    else:
        checks.stopped("a", 1.5, sigterm=how == "sigterm")
    checks.leader_answer("b", leader("b", 12, at=1.53, valid=3.0))
    assert findings.items == []


def test_a_killed_process_promise_holds_to_its_end(checks: ClaimChecks, findings: Findings) -> None:
    """Rule 22: the orchestrator that heard it outlives the sidecar that made it."""
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    checks.stopped("a", 1.5, sigterm=False)
    checks.restarted("a", 1.6)
    checks.leader_answer("b", leader("b", 12, at=2.0, valid=3.0))
    assert checks_failed(findings) == ["overlapping-validity"]
    checks.leader_answer("b", leader("b", 12, at=3.6, valid=3.0))  # after it: fine


def test_a_partition_or_a_freeze_ends_no_promise(checks: ClaimChecks, findings: Findings) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    checks.blind(["a"], "cut-both-leader(a)", 1.1)
    checks.leader_answer("b", leader("b", 12, at=2.0, valid=3.0))
    assert checks_failed(findings) == ["overlapping-validity"]


def test_claims_after_sigterm_are_a_violation(checks: ClaimChecks, findings: Findings) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    checks.stopped("a", 1.5, sigterm=True)
    checks.leader_answer("a", leader("a", 10, at=1.55, valid=1.9))  # within the grace
    assert findings.items == []
    for moment in (2.0, 2.05, 2.1):
        checks.leader_answer("a", leader("a", 10, at=moment, valid=1.0))
    assert checks_failed(findings) == ["claim-after-sigterm"]
    assert findings.items[0].repeats == 3


def test_a_resigned_or_restarted_epoch_never_comes_back(
    checks: ClaimChecks, findings: Findings
) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.5))
    checks.resigned(checks.resigning("a", 1.5), 1.6, 10)
    checks.leader_answer("a", leader("a", 10, at=1.7, valid=2.0))
    checks.leader_answer("b", leader("b", 11, at=4.0, valid=2.0))
    checks.stopped("b", 4.5, sigterm=False)
    checks.restarted("b", 6.0)
    checks.leader_answer("b", leader("b", 11, at=6.5, valid=2.0))
    assert checks_failed(findings) == ["epoch-resumed", "epoch-resumed"]


def test_a_leader_frozen_past_its_deadline_must_not_claim_first(
    checks: ClaimChecks, findings: Findings
) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=2.9))
    checks.first_after_resume("a", leader("a", 10, at=3.2, valid=0.5), 1.0, 3.2)  # 2.2 s: ok
    assert findings.items == []
    checks.first_after_resume("a", leader("a", 10, at=6.1, valid=0.5), 1.0, 6.1)  # 5.1 s
    assert "frozen-leader-claimed" in checks_failed(findings)


def test_naming_a_leader_long_after_losing_quorum_is_a_stale_view(
    checks: ClaimChecks, findings: Findings
) -> None:
    checks.blind(["a", "b"], "etcd-quorum-loss(m0 killed, m1 paused)", 10.0)
    # Named 4.9 s after: within TTL - margin (3 s) + 2 s.
    checks.leader_answer("b", leader("b", 9, at=14.9, valid=None, leader_id="a"))
    no_leader = Answer(200, {"leader": None, "epoch": None, "is_self": False}, 18.0, 18.001)
    checks.leader_answer("b", no_leader)
    assert findings.items == []
    checks.leader_answer("b", leader("b", 9, at=15.1, valid=None, leader_id="a"))
    assert checks_failed(findings) == ["stale-view"]
    checks.sighted(["a", "b"], "etcd-quorum-loss(m0 killed, m1 paused)")
    checks.leader_answer("b", leader("b", 9, at=19.0, valid=None, leader_id="a"))
    assert len(findings.items) == 1


def test_the_tests_own_invariants_are_kept(checks: ClaimChecks, findings: Findings) -> None:
    checks.leader_answer("a", leader("a", 10, at=1.0, valid=0.1))
    checks.leader_answer("b", leader("b", 10, at=5.0, valid=0.1))
    checks.fence_answer("c", Answer(200, {"epoch": 12, "valid_for_s": 0.0}, 6.0, 6.001))
    assert checks_failed(findings) == ["epoch-two-owners", "claim-without-validity"]


# --- the plan ------------------------------------------------------------------------------


def test_the_plan_is_the_seeds_and_tries_every_kind() -> None:
    plan = make_plan(1234, 30, ttl=5)
    assert plan == make_plan(1234, 30, ttl=5)
    assert plan != make_plan(1235, 30, ttl=5)
    first = {r.faults[0].fault for r in plan[: len(ALL_FAULTS)]}
    assert first == set(ALL_FAULTS)
    for r in plan:
        assert 1.0 <= r.hold_s <= 11.0
        assert len(r.faults) in (1, 2)
        if len(r.faults) == 2:
            assert compatible(r.faults[0].fault, r.faults[1].fault)


def test_faults_that_would_clash_are_never_held_together() -> None:
    assert not compatible(Fault.ETCD_QUORUM_LOSS, Fault.ETCD_KILL_RAFT_LEADER)
    assert not compatible(Fault.KILL_LEADER, Fault.RESIGN_LEADER)
    assert compatible(Fault.CUT_ANSWERS_LEADER, Fault.TERM_LEADER)  # the split-brain case
    assert compatible(Fault.KILL_FOLLOWER, Fault.STOP_FOLLOWER)  # two different followers
    assert parse_faults("kill-leader, cut-both-follower") == (
        Fault.KILL_LEADER,
        Fault.CUT_BOTH_FOLLOWER,
    )
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults("kill-everyone")


# --- the reports ---------------------------------------------------------------------------


def test_make_bench_keeps_the_chaos_section() -> None:
    results = json.loads((ROOT / "bench/results/latest.json").read_text())
    section = "<!-- chaos:begin -->\n## Chaos campaigns\nseed 42\n<!-- chaos:end -->"
    rendered = bench.report.render_markdown(results, f"# old\n\nfigures\n\n{section}\n")
    assert rendered.rstrip().endswith(section)
    bare = bench.report.render_markdown(results, "# old\n")
    assert bare.rstrip().endswith("<!-- chaos:begin -->\n<!-- chaos:end -->")


# --- a real campaign -----------------------------------------------------------------------

SHORT = (
    Fault.RESIGN_LEADER,
    Fault.STOP_LEADER,
    Fault.KILL_FOLLOWER,
    Fault.CUT_BOTH_FOLLOWER,
    Fault.CUT_ANSWERS_LEADER,
    Fault.ETCD_PAUSE_MEMBER,
    Fault.ETCD_KILL_RAFT_LEADER,
)


async def test_a_short_campaign_finds_nothing_and_reports(
    etcd: LocalEtcdCluster, tmp_path: Path
) -> None:
    options = Options(seed=5, rounds=3, ttl=5, time_limit_s=75, faults=SHORT, max_hold_s=4.0)
    campaign = Campaign(options, tmp_path / "run", etcd=etcd)
    (tmp_path / "run").mkdir()
    try:
        result = await campaign.run()
    finally:
        campaign.close()
    out, doc = tmp_path / "chaos-ttl5.json", tmp_path / "benchmarks.md"
    doc.write_text("# ringside benchmarks\n")
    chaos.report.write(result, out, doc)
    assert [f["check"] for f in result["findings"]] == [], chaos.report.summary(result)
    assert result["rounds_done"] == 3
    assert result["faults"] >= 3
    assert result["claims"] > 0
    assert result["wall_time_s"] < 75
    assert json.loads(out.read_text())["seed"] == 5
    section = doc.read_text()
    assert "<!-- chaos:begin -->" in section
    assert "| 5 s |" in section
    assert f"| 5 s | {result['date']} | 5 | 3/3 |" in section


@pytest.mark.parametrize(
    ("status", "body", "flagged"),
    [
        (503, {"error": "this node cannot vouch for any epoch now"}, False),  # decision 0026
        (503, "<html>Service Unavailable</html>", True),
        (500, {"error": "boom"}, True),
    ],
)
async def test_only_a_documented_refusal_is_not_a_server_error(
    status: int, body: Any, flagged: bool
) -> None:
    async def answer(request: web.Request) -> web.Response:
        text = json.dumps(body) if isinstance(body, dict) else body
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_get("/v1/fence", answer)
    async with TestServer(app) as server:
        findings = Findings(seed=1, started=0.0, echo=False)
        prober = Prober(findings)
        sidecar = Sidecar("n1", server.port or 0, {}, Path("/dev/null"))
        try:
            reply = await prober.request(sidecar, "/v1/fence?epoch=3")
        finally:
            await prober.close()
    assert reply.status == status
    assert bool(findings.items) is flagged
