"""`make demo` on this machine: five real sidecars on a real etcd, one status, nothing left over."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid

import psutil
import pytest

from tests.cli_support import clean_env

pytestmark = pytest.mark.etcd  # these tests start etcd clusters of their own

NODES = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3", "lambda-gh200-3", "vast-29118471")
MARK = "RINGSIDE_TEST_DEMO_MARK"


def marked(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries `mark`: everything the demo started."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(MARK) == mark and process.status() != "zombie":
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m sidecar.testing.demo *args`; fails the test if it left any process behind."""
    mark = uuid.uuid4().hex
    binary = os.environ.get("RINGSIDE_ETCD_BINARY")
    env = clean_env(**({"RINGSIDE_ETCD_BINARY": binary} if binary else {}))
    env[MARK] = mark  # inherited by every process the demo starts
    try:
        result = subprocess.run(
            [sys.executable, "-m", "sidecar.testing.demo", *args],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        leftovers = marked(mark)
        left = [" ".join(p.cmdline()) for p in leftovers]
        for process in leftovers:  # never leave them to the next test
            process.kill()
    assert result.returncode == 0, result.stdout + result.stderr
    assert left == [], f"left running: {left}"
    return result


def test_demo_flap_shows_the_flapping_node_in_ringside_flaps() -> None:
    out = run_demo("--once", "--flap").stdout
    lines = out.splitlines()
    header = lines.index(
        next(line for line in lines if line.startswith("NODE  ") and "LEFT" in line)
    )
    assert lines[header].split() == ["NODE", "LEFT", "BACK", "ABSENT", "LONGEST", "WHY", "NOW"]
    row = lines[header + 1].split()
    # Paused past its lease (expired), then restarted (stopped): two absences, both over.
    assert row[:3] == ["vast-29118471", "2", "2"], out
    assert " ".join(row[5:]) == "expired 1, stopped 1 live", out


def test_demo_once_shows_five_sidecars_one_hetzner_leader_and_cleans_up() -> None:
    result = run_demo("--once")
    out = result.stdout
    summary = re.search(
        r"^ringrift: leader (\S+) \(epoch \d+\), 5 alive, quorum ok \(3/3 voters\)$", out, re.M
    )
    assert summary is not None, out
    rows = {
        cells[0]: cells
        for cells in map(str.split, out.splitlines())
        if cells[:1] in [[n] for n in NODES]
    }
    assert sorted(rows) == sorted(NODES), out
    leaders = [node_id for node_id, cells in rows.items() if cells[1] == "leader"]
    assert leaders == [summary.group(1)], out
    assert leaders[0].startswith("hetzner-cpu")
    observers = {node_id for node_id, cells in rows.items() if cells[1] == "observer"}
    assert observers == {"lambda-gh200-3", "vast-29118471"}
    assert re.search(r"^from another shell: export RINGSIDE_ETCD_ENDPOINTS=http://", out, re.M)
