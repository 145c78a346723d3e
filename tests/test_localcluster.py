"""The test bed itself: members can be hurt and healed, and nothing outlives the test run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sidecar.testing.localcluster import LocalEtcdCluster
from tests.paths import ROOT

pytestmark = pytest.mark.etcd  # these tests start etcd clusters of their own


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return status != "Z"


def wait_gone(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def reap(pids: list[int]) -> None:
    """Kill what a failed assertion left running, so one failure does not leak processes."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_pause_makes_a_member_silent_and_heal_brings_it_back(etcd: LocalEtcdCluster) -> None:
    member = etcd.members[0]
    member.pause()
    assert member.health(timeout=0.5) is False
    etcd.heal()
    assert member.health() is True
    member.kill()
    assert not member.running
    etcd.heal()
    assert all(m.health() for m in etcd.members)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_members_die_with_a_killed_test_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from sidecar.testing.localcluster import LocalEtcdCluster
        cluster = LocalEtcdCluster(Path({str(tmp_path)!r}), size=1)
        cluster.start()
        print(cluster.members[0].process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    assert parent.stdout is not None
    member_pid = int(parent.stdout.readline())
    assert alive(member_pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        assert wait_gone([member_pid], within_s=5) == []
    finally:
        reap([member_pid])


def test_members_are_stopped_when_a_test_fails(tmp_path: Path) -> None:
    """The session fixture's teardown runs whatever the tests did."""
    pids_file = tmp_path / "pids"
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(
        textwrap.dedent(
            f"""
            from pathlib import Path

            def test_that_fails(etcd_cluster):
                pids = [str(m.process.pid) for m in etcd_cluster.members]
                Path({str(pids_file)!r}).write_text(" ".join(pids))
                assert False, "failing on purpose"
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest",
            "--rootdir", str(tmp_path), "-c", os.devnull, str(test_file),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failing on purpose" in result.stdout
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 3
    try:
        assert wait_gone(pids, within_s=5) == []
    finally:
        reap(pids)
