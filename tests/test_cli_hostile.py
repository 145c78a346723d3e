"""What a node writes into its own record reaches every operator's terminal: it must arrive
as text, never as terminal control (rule 14). A hostile record is written straight to etcd,
as a node with write access to its own key could, and read back with the real commands."""

from __future__ import annotations

import json

from sidecar.keys import Keys
from sidecar.testing.localcluster import LocalEtcdCluster
from tests.cli_support import ringside
from tests.fleet import Fleet

ESC = "\x1b"
HOSTILE = {
    "node_id": "evil",
    "addresses": [f"{ESC}]0;owned{ESC}\\\u202e198.51.100.7"],
    "labels": {"gpu": f"{ESC}[2J{ESC}[31mh100\nhetzner-cpu9    leader    alive"},
    "eligible": False,
    "version": f"0.2{ESC}[8m",
    "hostname": "evil\rhost",
    "started_at": "2026-12-01T00:00:00+00:00",
}


async def test_status_and_members_print_hostile_text_as_escapes(
    fleet: Fleet, etcd: LocalEtcdCluster
) -> None:
    sidecar = fleet.add("n1")
    await fleet.wait_converged(["n1"], within_s=20)
    store = etcd.client()
    try:
        lease = await store.lease_grant(60)
        key = Keys(fleet.cluster).member("evil")
        await store.put(key, json.dumps(HOSTILE).encode(), lease=lease.id)
        await fleet.wait_converged(["n1", "evil"], within_s=10, leader_among=["n1"])
        for args in (("status", "-o", "wide"), ("members", "-o", "wide"), ("status", "-o", "yaml")):
            shown = await ringside(*args, "--sidecar", sidecar.url)
            assert shown.returncode == 0, shown.stderr
            assert ESC not in shown.stdout, args
            assert "\u202e" not in shown.stdout, args
            assert "\r" not in shown.stdout, args
            rows = [line for line in shown.stdout.splitlines() if "cpu9" in line]
            if args[-1] == "wide":  # the forged line stays inside the evil member's row
                assert len(rows) == 1, shown.stdout
                assert rows[0].startswith("evil "), shown.stdout
                assert "\\x1b[2J\\x1b[31mh100\\nhetzner-cpu9" in rows[0]
        await store.lease_revoke(lease.id)
    finally:
        await store.close()
