"""Issue 21's first attack, as measured, on a real etcd set up as production is (TLS with
client certificates, per-node users from `ringside auth init`): a stranger holding only the
client certificate every node has, and no password, keeps a SIGKILLed leader's lease alive.
Before proof of life (decision 0022) the dead leader led for as long as the keepalives went on;
now the next candidate deposes it within TTL + 1 s of the kill, and nobody names it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest

from sidecar.records import MemberRecord
from sidecar.store.errors import StoreError
from sidecar.store.etcd import EtcdStore
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.fleet import FLEET_TTL, Fleet
from tests.test_auth import (
    CLUSTER,
    ELIGIBLE,
    KEYS,
    OBSERVER,
    OTHER,
    as_root,
    login,
    secured,
    tls_settings,
)
from tests.waiting import wait_for

__all__ = ["secured"]  # the module's TLS + auth cluster fixture, shared with test_auth

pytestmark = pytest.mark.etcd
TTL = FLEET_TTL  # at 3 s the default 2 s margin leaves a budget of one keepalive period


async def keep_alive(
    stranger: EtcdStore, lease: int, renewed: list[int], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        renewed.append(await stranger.lease_keepalive(lease))
        await asyncio.sleep(0.3)


async def test_a_strangers_keepalives_keep_no_killed_leader_leading(
    secured: tuple[LocalEtcdCluster, Path], tmp_path: Path
) -> None:
    etcd, secrets = secured
    fleet = Fleet(etcd, tmp_path, lease_ttl=TTL)
    fleet.cluster = CLUSTER

    def credentials(node_id: str) -> dict[str, object]:
        password = str(secrets / f"{node_id}.password")
        return {"etcd": {"password_file": password, **tls_settings(etcd)}}

    stranger = etcd.client()  # the client certificate alone: no user, no password
    root = as_root(etcd, secrets)
    stop = asyncio.Event()
    attack: asyncio.Task[None] | None = None
    try:
        for node_id in (ELIGIBLE, OTHER):
            fleet.add(node_id, settings=credentials(node_id))
        fleet.add(OBSERVER, eligible=False, settings=credentials(OBSERVER))
        everyone = [ELIGIBLE, OTHER, OBSERVER]
        first = await fleet.wait_converged(everyone, within_s=20, leader_among=[ELIGIBLE, OTHER])
        dead, heir = first["node_id"], OTHER if first["node_id"] == ELIGIBLE else ELIGIBLE
        held = (await root.get(KEYS.candidate(dead))).kvs[0]
        renewed: list[int] = []
        fleet.sidecars[dead].signal(signal.SIGKILL)
        killed_at = time.monotonic()
        attack = asyncio.create_task(keep_alive(stranger, held.lease, renewed, stop))

        async def heir_leads() -> bool:
            answers = [await fleet.get(fleet.sidecars[n], "/v1/leader") for n in (heir, OBSERVER)]
            return all(
                a is not None and a.get("leader") == heir and a.get("epoch", 0) > first["epoch"]
                for a in answers
            )

        await wait_for(heir_leads, TTL + 1, what=f"{heir} leading while {dead}'s lease is kept")
        took = time.monotonic() - killed_at
        assert renewed, "the stranger renewed the lease"
        assert renewed[-1] > 0, "the stranger's keepalives went through"
        assert (await root.get(KEYS.candidate(dead))).kvs, "the dead leader's key still exists"
        assert took <= TTL + 1

        async def dead_is_gone() -> bool:
            for node_id in (heir, OBSERVER):
                status = await fleet.get(fleet.sidecars[node_id], "/v1/status")
                if status is None or dead in {m["node_id"] for m in status["members"]}:
                    return False
            return True

        await wait_for(dead_is_gone, TTL + 1 - took, what=f"{dead} gone from the members")
        # For another lease time of keepalives, nobody names the dead node as leader again.
        assert (await root.get(KEYS.member(dead))).kvs, "its member key is still kept alive"
        until = time.monotonic() + TTL
        while time.monotonic() < until:
            for node_id in (heir, OBSERVER):
                answer = await fleet.get(fleet.sidecars[node_id], "/v1/leader")
                assert answer is not None
                assert answer.get("leader") == heir, answer
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        if attack is not None:
            await attack
        await fleet.close()
        await stranger.close()
        await root.close()


@pytest.mark.parametrize(
    ("proof_ttl", "why"),
    [
        (0, "declares no proof of life"),  # as ringside before 0.2, or a hand-written record
        (9_000_000_000, "longer than the cluster's maximum"),
        (TTL, "deposed by"),  # declared, then never proved again
    ],
)
async def test_a_long_lease_without_a_sidecar_leads_nothing(
    secured: tuple[LocalEtcdCluster, Path], tmp_path: Path, proof_ttl: int, why: str
) -> None:
    """Issue 21's second attack: an eligible node's own credential grants a 9,000,000,000 s
    lease and puts its member and candidate keys on it, first in line, and runs no sidecar.
    It led within 9 s and for as long as the lease lived; now the real candidate leads."""
    etcd, secrets = secured
    attacker = login(etcd, secrets, ELIGIBLE)
    fleet = Fleet(etcd, tmp_path, lease_ttl=TTL)
    fleet.cluster = CLUSTER
    lease = await attacker.lease_grant(9_000_000_000)
    try:
        record = MemberRecord(node_id=ELIGIBLE, eligible=True, proof_ttl=proof_ttl)
        await attacker.put(KEYS.member(ELIGIBLE), record.encode(), lease=lease.id)
        await attacker.put(KEYS.candidate(ELIGIBLE), ELIGIBLE.encode(), lease=lease.id)
        password = str(secrets / f"{OTHER}.password")
        honest = fleet.add(
            OTHER, settings={"etcd": {"password_file": password, **tls_settings(etcd)}}
        )

        async def honest_leads() -> bool:
            answer = await fleet.get(honest, "/v1/leader")
            return answer is not None and answer.get("is_self") is True

        await wait_for(honest_leads, 10 + TTL + 1, what=f"{OTHER} leading beside the long lease")
        status = await fleet.get(honest, "/v1/status")
        assert status is not None
        reasons = [c["reason"] for c in status["ignored_candidates"]]
        assert any(why in reason for reason in reasons), reasons
    finally:
        await fleet.close()
        with contextlib.suppress(StoreError):
            await attacker.lease_revoke(lease.id)
        await attacker.close()
