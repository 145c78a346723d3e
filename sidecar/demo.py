"""`make demo`: ringside's moving parts on a real local etcd cluster, with nothing to set up.

Starts three etcd members on loopback, then shows the primitives every node relies on, as
etcd answers them: a lease, a member key created only if absent, a duplicate refused, the
key vanishing when its lease is revoked, and a watch that sees it all. It then keeps the
cluster up until Ctrl-C (or `--seconds`), printing the endpoints to point `ringside` at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
from pathlib import Path

from sidecar.localcluster import LocalClusterError, LocalEtcdCluster
from sidecar.store.base import Store
from sidecar.store.model import Compare, Get, Put

PREFIX = "/ringside/demo/members/"


async def show_membership(store: Store) -> None:
    async with store.watch(PREFIX, prefix=True) as batches:
        lease = await store.lease_grant(10)
        print(f"lease {lease.id:x} granted, ttl {lease.ttl}s")
        record = json.dumps({"node_id": "hetzner-cpu1", "pid": 4242}).encode()
        key = PREFIX + "hetzner-cpu1"
        first = await store.txn([Compare.absent(key)], [Put(key, record, lease.id)], [Get(key)])
        print(f"register hetzner-cpu1 (create_revision == 0): succeeded={first.succeeded}")
        second = await store.txn([Compare.absent(key)], [Put(key, b"{}", 0)], [Get(key)])
        print(f"register hetzner-cpu1 again: succeeded={second.succeeded} (duplicate refused)")
        await store.lease_revoke(lease.id)
        print("lease revoked")
        seen = 0
        async for batch in batches:
            for event in batch.events:
                print(f"  watch: revision {batch.revision} {event.type.name} {event.kv.key}")
                seen += 1
            if seen >= 2:
                break


async def run(cluster: LocalEtcdCluster, seconds: float | None) -> None:
    store = cluster.client()
    try:
        await show_membership(store)
        members = await store.members()
        print(f"etcd cluster: {len(members)} members, endpoints {','.join(cluster.client_urls)}")
    finally:
        await store.close()
    print(f"export RINGSIDE_ETCD_ENDPOINTS={','.join(cluster.client_urls)}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("cluster running; Ctrl-C stops it" if seconds is None else f"running {seconds:.0f}s")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.demo", description=__doc__)
    parser.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringside-demo-") as tmp:
        try:
            with LocalEtcdCluster(Path(tmp)) as cluster:
                print(f"etcd members up: {', '.join(m.name for m in cluster.members)}")
                asyncio.run(run(cluster, args.seconds))
        except LocalClusterError as e:
            print(f"demo: {e}", file=sys.stderr)
            return 1
    print("cluster stopped, data removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
