"""`make demo`: five ringside sidecars on a real three-member etcd cluster, nothing to set up.

Starts etcd on loopback, then `ringside run` as hetzner-cpu1..3 (leader-eligible, like the
voters), lambda-gh200-3 and vast-29118471 (not eligible), with the sample inventory when it is
checked out beside the repository. Once all are ready it prints `ringside status` and follows
`ringside status --watch` until Ctrl-C; `--once` prints the status and exits (for tests).

Everything is stopped in order on the way out: the sidecars first (SIGTERM, so the leader
resigns and every lease is revoked while etcd is still there), then etcd. The demo runs in a
session of its own so that Ctrl-C reaches only it: the terminal would otherwise signal etcd and
the sidecars at the same moment. If the demo itself is killed, the kernel stops its children.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

from sidecar.cli.local_api import SidecarClient, SidecarUnreachable
from sidecar.cli.reports import NoAnswer
from sidecar.deadline import Deadline
from sidecar.testing.localcluster import (
    LocalClusterError,
    LocalEtcdCluster,
    free_port,
    on_parent_death,
)

CLUSTER: Final = "ringrift"
NODES: Final = (
    ("hetzner-cpu1", True),
    ("hetzner-cpu2", True),
    ("hetzner-cpu3", True),
    ("lambda-gh200-3", False),
    ("vast-29118471", False),
)
READY_WITHIN_S: Final = 60.0
FLAPPER: Final = "vast-29118471"  # the node `--flap` makes flap
FLAPPER_TTL_S: Final = 3
STOP_WITHIN_S: Final = 5.0
INVENTORY: Final = Path("config/distributed_hosts.example.yaml")
_IN_SESSION: Final = "--in-own-session"


class DemoFailed(Exception):
    """A sidecar did not start or did not become ready; the message says which and why."""


class _Stop(Exception):
    """SIGTERM or SIGINT arrived: stop everything in order."""


def _sidecar_child() -> None:
    on_parent_death(signal.SIGTERM)  # a sidecar stops cleanly (resigns, revokes its lease)


@dataclass
class DemoSidecar:
    node_id: str
    url: str
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] = field(init=False)  # set by start()

    def start(self) -> None:
        """(Re)start its `ringside run`, logging to its file."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "run"],
                env=self.env,
                stdout=log,
                stderr=log,
                preexec_fn=_sidecar_child,  # noqa: PLW1509  # prctl must run in the child
            )


def find_inventory() -> Path | None:
    """The sample inventory in the checkout's ``config/`` (or the current directory's); None
    when ringside runs from an installed package without a checkout."""
    checkout = Path(__file__).resolve().parent.parent
    for base in (checkout, Path.cwd()):
        if (base / INVENTORY).is_file():
            return base / INVENTORY
    return None


def start_sidecars(
    cluster: LocalEtcdCluster, workdir: Path, inventory: Path | None, *, flap: bool = False
) -> list[DemoSidecar]:
    """The five sidecars; with `flap`, the one that flaps (FLAPPER) gets a short lease, so
    that pausing it makes its lease expire in seconds."""
    sidecars = []
    for node_id, eligible in NODES:
        listen = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "RINGSIDE_NODE_ID": node_id,
            "RINGSIDE_CLUSTER": CLUSTER,
            "RINGSIDE_ETCD_ENDPOINTS": ",".join(cluster.client_urls),
            "RINGSIDE_HTTP_LISTEN": listen,
            "RINGSIDE_LOCK_FILE": str(workdir / f"{node_id}.lock"),
            "RINGSIDE_LEADER_ELIGIBLE": "true" if eligible else "false",
        }
        env.pop("RINGSIDE_CONFIG", None)
        if inventory is not None:
            env["RINGSIDE_INVENTORY"] = str(inventory)
        if flap and node_id == FLAPPER:
            env["RINGSIDE_LEASE_TTL"] = str(FLAPPER_TTL_S)
        sidecar = DemoSidecar(node_id, f"http://{listen}", workdir / f"{node_id}.log", env)
        sidecar.start()
        sidecars.append(sidecar)
    return sidecars


def flap(sidecars: Sequence[DemoSidecar], within_s: float) -> None:
    """FLAPPER leaves and comes back twice, as the old gossip layer saw Vast nodes do: paused
    past its lease (it expires), then stopped and started again (a clean stop). Returns once
    the leader has recorded both in the cluster history."""
    flapper = next(s for s in sidecars if s.node_id == FLAPPER)
    watcher = SidecarClient(sidecars[0].url)
    deadline = Deadline(within_s)
    print(
        f"flapping {FLAPPER}: paused past its {FLAPPER_TTL_S} s lease, then restarted", flush=True
    )
    flapper.process.send_signal(signal.SIGSTOP)
    _until(lambda: not _listed(watcher, FLAPPER), deadline, f"{FLAPPER} did not expire")
    flapper.process.send_signal(signal.SIGCONT)
    _until(lambda: _listed(watcher, FLAPPER), deadline, f"{FLAPPER} did not come back")
    flapper.process.send_signal(signal.SIGTERM)
    flapper.process.wait(STOP_WITHIN_S)
    _until(lambda: not _listed(watcher, FLAPPER), deadline, f"{FLAPPER} did not leave")
    flapper.start()
    _until(lambda: _listed(watcher, FLAPPER), deadline, f"{FLAPPER} did not join again")

    def recorded() -> bool:
        left = [e for e in watcher.history(0.0, FLAPPER) if e.kind == "member_left"]
        return len(left) >= 2

    _until(recorded, deadline, "the leader did not record the flaps")


def _listed(client: SidecarClient, node_id: str) -> bool:
    return any(m.node_id == node_id for m in client.status().members)


def _until(done: Callable[[], bool], deadline: Deadline, failure: str) -> None:
    while not done():
        if deadline.expired:
            raise DemoFailed(failure)
        time.sleep(0.1)


def wait_ready(sidecars: Sequence[DemoSidecar], within_s: float) -> None:
    """Each sidecar answers /ready, then the first one sees all five and a leader."""
    deadline = Deadline(within_s)
    for sidecar in sidecars:
        client = SidecarClient(sidecar.url, timeout_s=1.0)
        while True:
            _check_running(sidecar)
            try:
                if client.ready(wait_s=min(1.0, deadline.remaining()))[0]:
                    break
            except SidecarUnreachable:  # not listening yet
                time.sleep(0.1)
            if deadline.expired:
                raise DemoFailed(f"{sidecar.node_id} not ready within {within_s:g} s")
    first = SidecarClient(sidecars[0].url)
    expected = sorted(s.node_id for s in sidecars)
    while True:
        report = first.status()
        if report.healthy and sorted(m.node_id for m in report.members) == expected:
            return
        if deadline.expired:
            raise DemoFailed(f"no leader and all five members within {within_s:g} s")
        time.sleep(0.1)


def _check_running(sidecar: DemoSidecar) -> None:
    if sidecar.process.poll() is not None:
        tail = sidecar.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise DemoFailed(
            f"{sidecar.node_id} exited with code {sidecar.process.returncode}: " + " | ".join(tail)
        )


def ringside(*args: str) -> subprocess.Popen[bytes]:
    """The `ringside` command, run as an operator would run it (shown first)."""
    print(f"$ ringside {' '.join(args)}", flush=True)
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", *args],
        preexec_fn=_sidecar_child,  # noqa: PLW1509
    )


def stop_sidecars(sidecars: Sequence[DemoSidecar]) -> None:
    for sidecar in sidecars:
        if sidecar.process.poll() is None:
            sidecar.process.send_signal(signal.SIGTERM)
    for sidecar in sidecars:
        try:
            sidecar.process.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            sidecar.process.kill()
            sidecar.process.wait()


def run_demo(once: bool, seconds: float | None, *, flapping: bool = False) -> int:
    """Everything from an empty temp dir to a clean stop; returns the exit code."""
    with tempfile.TemporaryDirectory(prefix="ringside-demo-") as tmp, _stop_on_signals():
        workdir = Path(tmp)
        inventory = find_inventory()
        sidecars: list[DemoSidecar] = []
        watcher: subprocess.Popen[bytes] | None = None
        with LocalEtcdCluster(workdir / "etcd") as cluster:
            try:
                print(f"etcd: 3 members at {','.join(cluster.client_urls)}", flush=True)
                sidecars = start_sidecars(cluster, workdir, inventory, flap=flapping)
                print(
                    f"starting {len(sidecars)} sidecars (cluster {CLUSTER}, inventory "
                    f"{inventory or 'none'}, logs in {workdir})",
                    flush=True,
                )
                wait_ready(sidecars, READY_WITHIN_S)
                code = ringside("status", "--sidecar", sidecars[0].url).wait()
                if flapping:
                    flap(sidecars, READY_WITHIN_S)
                    code = code or ringside("flaps", "--sidecar", sidecars[0].url).wait()
                print(_point_your_shell(cluster, sidecars), flush=True)
                if once:
                    return code
                print("following changes; Ctrl-C stops it all", flush=True)
                watcher = ringside("status", "--watch", "--sidecar", sidecars[0].url)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    watcher.wait(seconds)
                return 0
            except (DemoFailed, NoAnswer) as e:
                print(f"demo: {e}", file=sys.stderr)
                return 1
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if watcher is not None and watcher.poll() is None:
                    watcher.terminate()
                    watcher.wait()
                stop_sidecars(sidecars)
                print("sidecars stopped; stopping etcd", flush=True)
    return 1  # not reached: LocalEtcdCluster does not swallow exceptions


def _point_your_shell(cluster: LocalEtcdCluster, sidecars: Sequence[DemoSidecar]) -> str:
    listen = sidecars[0].url.removeprefix("http://")
    return "\n".join(
        [
            f"from another shell: export RINGSIDE_ETCD_ENDPOINTS={','.join(cluster.client_urls)} "
            f"RINGSIDE_HTTP_LISTEN={listen}  # then: ringside status",
            "sidecars: " + ", ".join(f"{s.node_id} {s.url}" for s in sidecars),
        ]
    )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _shielded(argv: Sequence[str]) -> int:
    """Run the demo in its own session and turn our Ctrl-C into its orderly stop."""
    child = subprocess.Popen(
        [sys.executable, "-m", "sidecar.testing.demo", *argv, _IN_SESSION],
        start_new_session=True,
        preexec_fn=lambda: on_parent_death(signal.SIGTERM),  # noqa: PLW1509
    )

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    return child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m sidecar.testing.demo", description=__doc__)
    parser.add_argument("--once", action="store_true", help="print the status once and exit")
    parser.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    parser.add_argument(
        "--flap",
        action="store_true",
        help=f"make {FLAPPER} leave and come back twice, then show `ringside flaps`",
    )
    parser.add_argument(_IN_SESSION, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.in_own_session:
        return _shielded(argv)
    try:
        return run_demo(args.once, args.seconds, flapping=args.flap)
    except _Stop:
        return 0
    except LocalClusterError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
