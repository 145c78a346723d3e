"""Promises outlive the process that made them (design rule 22, `sidecar.promise`).

Issue 21 measured it: kill -9 of the leader's sidecar, restarted within a second by its
supervisor, and the new process revoked its predecessor's lease at once; another node led 1.2 s
after the kill while the dead process had promised its orchestrator 2.9 s more.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from sidecar.promise import MAX_WAIT_S, PromiseFile
from sidecar.records import boot_id
from tests.fleet import FLEET_TTL, Fleet, InvariantChecker
from tests.waiting import wait_for


def test_a_covered_promise_is_inherited_by_the_next_process(tmp_path: Path) -> None:
    file = PromiseFile.beside(tmp_path / "ringrift.lock")
    assert file.path == tmp_path / "ringrift.lock.promise"
    assert file.inherited() == 0.0, "no file, no promise"
    now = time.monotonic()
    assert file.cover(now + 3.0, epoch=7)
    assert PromiseFile(file.path).inherited(now) == pytest.approx(3.0)
    assert PromiseFile(file.path).inherited(now + 4.0) == 0.0, "run out"
    file.forget()
    assert PromiseFile(file.path).inherited(now) == 0.0


def test_only_further_promises_are_written(tmp_path: Path) -> None:
    file = PromiseFile(tmp_path / "p")
    assert file.cover(100.0, epoch=1)
    marker = json.dumps({"boot_id": boot_id(), "monotonic_until": 100.0, "epoch": "marker"})
    file.path.write_text(marker)
    assert file.cover(90.0, epoch=1)  # covered already: nothing written
    assert file.path.read_text() == marker
    assert file.cover(110.0, epoch=2)
    assert json.loads(file.path.read_text())["epoch"] == 2


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        json.dumps({"boot_id": "another boot", "monotonic_until": 1e12}).encode(),
        json.dumps({"boot_id": boot_id(), "monotonic_until": "soon"}).encode(),
        json.dumps({"boot_id": boot_id(), "monotonic_until": True}).encode(),
    ],
)
def test_a_file_that_cannot_be_believed_promises_nothing(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "p"
    path.write_bytes(content)
    assert PromiseFile(path).inherited() == 0.0


def test_no_file_holds_a_restart_for_longer_than_the_longest_lease(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_text(json.dumps({"boot_id": boot_id(), "monotonic_until": 1e15}))
    assert PromiseFile(path).inherited() == MAX_WAIT_S


def test_a_promise_that_cannot_be_written_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = PromiseFile(tmp_path / "missing-dir" / "p")
    assert not file.cover(time.monotonic() + 3, epoch=1)
    assert not file.cover(time.monotonic() + 4, epoch=1)
    assert file.failed is not None
    assert len([r for r in caplog.records if "cannot record" in r.message]) == 1


@pytest.mark.etcd
async def test_a_killed_leader_restarted_at_once_keeps_its_promise(fleet: Fleet) -> None:
    nodes = ("hetzner-cpu1", "hetzner-cpu2", "hetzner-cpu3")
    async with InvariantChecker(fleet) as checker:
        for node_id in nodes:
            fleet.add(node_id)
        first = await fleet.wait_converged(nodes, within_s=15)
        leader = fleet.sidecars[first["node_id"]]
        sent = time.monotonic()
        promise = await fleet.get(leader, "/v1/leader")
        assert promise is not None
        assert promise["is_self"] is True
        promised_until = sent + promise["valid_for_s"]
        leader.signal(signal.SIGKILL)
        leader.wait_exit(5)
        leader.start()  # its supervisor, within the second
        others = [fleet.sidecars[n] for n in nodes if n != leader.node_id]

        async def someone_else_leads() -> bool:
            for sidecar in others:
                answer = await fleet.get(sidecar, "/v1/leader")
                if answer is not None and answer.get("is_self"):
                    return True
            return False

        await wait_for(someone_else_leads, FLEET_TTL + 2, interval_s=0.02, what="a successor")
        led_at = time.monotonic()
        assert led_at > promised_until, (
            f"a successor led {promised_until - led_at:.2f} s inside the dead process's promise"
        )
        await fleet.wait_converged(nodes, within_s=FLEET_TTL + 5)
    assert checker.claimed_by(leader.node_id)[0] == first["epoch"]
