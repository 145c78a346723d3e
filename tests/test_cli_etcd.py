"""`ringside etcd`: what an operator runs on a node to see whether etcd is there for it."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from sidecar.cli import ringside
from sidecar.testing.localcluster import LocalEtcdCluster

UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens there


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(ringside, ["etcd", *args], env={"RINGSIDE_CONFIG": ""})
    return result.exit_code, result.stdout, result.stderr


def test_healthy_cluster_shows_every_endpoint_and_quorum(etcd_cluster: LocalEtcdCluster) -> None:
    endpoints = ",".join([*etcd_cluster.client_urls, UNREACHABLE])
    code, out, _ = run("--etcd-endpoints", endpoints)
    assert code == 0, out
    lines = out.splitlines()
    for url in etcd_cluster.client_urls:
        assert any(url in line and " up " in line for line in lines), out
    assert any(UNREACHABLE in line and " down " in line for line in lines), out
    assert "quorum: ok" in out
    assert "3 members: m0, m1, m2" in out


def test_json_names_the_raft_leader(etcd_cluster: LocalEtcdCluster) -> None:
    code, out, _ = run("--json", "--etcd-endpoints", ",".join(etcd_cluster.client_urls))
    assert code == 0
    document = json.loads(out)
    assert document["quorum_ok"] is True
    assert document["raft_leader"] == etcd_cluster.leader().name
    assert [e["up"] for e in document["endpoints"]] == [True, True, True]


def test_lost_quorum_exits_1_and_says_so(etcd: LocalEtcdCluster) -> None:
    etcd.members[0].kill()
    etcd.members[1].kill()
    started = time.monotonic()
    code, out, _ = run("--etcd-endpoints", ",".join(etcd.client_urls))
    assert code == 1
    assert "quorum: NOT ok: 1 of 3 endpoints answer, but no linearizable read went through" in out
    assert "raft leader" not in out
    # One verdict: the member still up is not shown as a follower of a leader it has not got.
    assert " follower" not in out, out
    # One status probe per endpoint in parallel, then one read across three endpoints.
    assert time.monotonic() - started < 1.5 + 3 * 1.5 + 1.5


def test_a_bad_endpoint_url_is_a_config_error() -> None:
    code, _, err = run("--etcd-endpoints", "127.0.0.1:2379")
    assert code == 2
    assert err.startswith("ringside: error: etcd.endpoints")
    assert len(err.strip().splitlines()) == 1


def test_status_from_etcd_during_a_quorum_loss_exits_1_like_through_a_sidecar(
    etcd: LocalEtcdCluster,
) -> None:
    """One exit code per situation on every path: no quorum is 'degraded' (1), whether the
    status comes from a sidecar or straight from etcd; 3 is kept for nobody answering."""
    etcd.members[0].kill()
    etcd.members[1].kill()
    result = CliRunner().invoke(
        ringside,
        ["status", "--etcd", ",".join(etcd.client_urls), "--cluster", "lost"],
        env={"RINGSIDE_CONFIG": ""},
    )
    assert result.exit_code == 1, result.output
    assert "quorum LOST" in result.stdout
    nobody = CliRunner().invoke(
        ringside, ["status", "--etcd", UNREACHABLE], env={"RINGSIDE_CONFIG": ""}
    )
    assert nobody.exit_code == 3, nobody.output


def test_status_etcd_without_a_value_reads_the_configured_endpoints(
    etcd_cluster: LocalEtcdCluster,
) -> None:
    """`--etcd` alone means the endpoints the configuration names (here the environment);
    `--etcd URL` overrides them, and a bad URL there is named with the flag that gave it."""
    env = {"RINGSIDE_CONFIG": "", "RINGSIDE_ETCD_ENDPOINTS": ",".join(etcd_cluster.client_urls)}
    configured = CliRunner().invoke(
        ringside, ["status", "--etcd", "-o", "json", "--cluster", "configured"], env=env
    )
    assert configured.exit_code == 1, configured.output  # nobody leads in an empty cluster
    assert json.loads(configured.stdout)["quorum_ok"] is True
    overridden = CliRunner().invoke(ringside, ["status", "--etcd", UNREACHABLE], env=env)
    assert overridden.exit_code == 3, overridden.output
    bad = CliRunner().invoke(ringside, ["status", "--etcd", "ftp://x:1"], env=env)
    assert bad.exit_code == 2, bad.output
    assert "(flag --etcd)" in bad.stderr
