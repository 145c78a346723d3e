"""A throwaway etcd cluster on loopback: real `etcd` processes, free ports, temporary data.

The tests, the benchmarks and `make demo` all need a real three-member etcd without any
setup. Each member can be stopped, killed, paused (SIGSTOP: the process and its sockets stay,
nothing answers, like a frozen VM) and brought back, so failure tests act on real Raft.

On Linux every member is tied to the process that started it (PR_SET_PDEATHSIG): if the test
run dies, even by SIGKILL, the kernel kills the members too, so none are left behind. The
kernel ties the member to the *thread* that started it, so a member started from a worker
thread (`asyncio.to_thread`) would die with that thread; those are not tied, and are left to
`close()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from sidecar.deadline import Deadline
from sidecar.store.etcd import EtcdStore
from sidecar.store.gateway import TlsFiles

_PR_SET_PDEATHSIG = 1


class LocalClusterError(RuntimeError):
    """etcd is missing, or a member did not come up in time."""


def find_etcd() -> str:
    """The etcd binary: $RINGSIDE_ETCD_BINARY, else `etcd` on PATH."""
    configured = os.environ.get("RINGSIDE_ETCD_BINARY")
    found = configured or shutil.which("etcd")
    if not found or not os.access(found, os.X_OK):
        raise LocalClusterError(
            "no etcd binary found: install Debian's etcd-server (apt-get install etcd-server) "
            "or set RINGSIDE_ETCD_BINARY to an etcd 3.4+ binary"
        )
    return found


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The kernel's first port for outgoing connections (32768 on most Linux systems)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, chosen *below* the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` comes from the range it also uses for outgoing
    connections, so between our check and etcd's bind, a client or an etcd peer dialling out
    could take it as its local port ("address already in use": seen here). Below the range, only
    a listener could take it.
    """
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(20000, low) if low > 21000 else random.randrange(1024, 65535)
        if port in _HANDED_OUT:
            continue  # given to a caller that may not have bound it yet
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise LocalClusterError("no free loopback port found below the ephemeral range")


def _wait_stopped(pid: int, timeout: float = 2.0) -> None:
    """Wait until every thread of `pid` is in the stopped state (where /proc tells)."""
    tasks = Path(f"/proc/{pid}/task")
    deadline = Deadline(timeout)
    while not deadline.expired:
        try:
            threads = list(tasks.iterdir())
        except OSError:
            return  # no /proc (not Linux), or the process is gone: nothing to wait for
        if all(_thread_state(thread) in {"T", "t", None} for thread in threads):
            return
        time.sleep(0.005)
    raise LocalClusterError(f"pid {pid} did not stop within {timeout} s of SIGSTOP")


def _thread_state(task: Path) -> str | None:
    """The state letter in /proc/<pid>/task/<tid>/stat; None when the thread has gone."""
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def on_parent_death(sig: signal.Signals) -> None:
    """In a child before exec (`preexec_fn`): the kernel sends it `sig` when the thread that
    forked it ends (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


def die_with_parent() -> None:
    """`on_parent_death(SIGKILL)`: for etcd members and test processes."""
    on_parent_death(signal.SIGKILL)


@dataclass
class EtcdMember:
    """One etcd member process, and the knobs to hurt it."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    args: list[str] = field(default_factory=list)
    scheme: str = "http"
    ssl_context: ssl.SSLContext | None = None
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    _log: IO[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir.parent / f"{self.name}.log", "ab")  # noqa: SIM115
        tie = (
            sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()
        )
        preexec = die_with_parent if tie else None
        self.process = subprocess.Popen(
            # prctl in the child, before exec: the only way to tie its life to ours.
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,  # noqa: PLW1509
        )
        self.paused = False

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the member (SIGTERM: graceful; SIGKILL: a crash) and wait for it to exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if self.paused:
                self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.paused = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP the member, and return once the kernel reports every thread stopped: the
        signal is delivered asynchronously, and a test that asks a half-stopped member could
        still get an answer."""
        if self.running and not self.paused:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True
            _wait_stopped(self.process.pid)

    def resume(self) -> None:
        if self.running and self.paused:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
            self.paused = False

    def health(self, timeout: float = 1.0) -> bool:
        """etcd's own /health: true only while this member has a leader and quorum."""
        try:
            with urllib.request.urlopen(
                self.client_url + "/health", timeout=timeout, context=self.ssl_context
            ) as r:
                answer: Any = json.loads(r.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return isinstance(answer, dict) and answer.get("health") == "true"


@dataclass(frozen=True)
class ServerTls:
    """PEM files for members that serve clients over TLS and require client certificates
    (etcd's `--client-cert-auth`); the client pair is what `LocalEtcdCluster.client` uses."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def client_files(self) -> TlsFiles:
        return TlsFiles(ca=self.ca, cert=self.client_cert, key=self.client_key)


class LocalEtcdCluster:
    """`size` etcd members on 127.0.0.1, started together, each with its own data dir.

    Use as `with LocalEtcdCluster(tmp_dir) as cluster: store = cluster.client()`; leaving
    the block kills every member and removes the data.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        size: int = 3,
        etcd_binary: str | None = None,
        tls: ServerTls | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.tls = tls
        binary = etcd_binary or find_etcd()
        token = f"ringside-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [
            EtcdMember(f"m{i}", free_port(), free_port(), base_dir / f"m{i}.data")
            for i in range(size)
        ]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        context = tls.client_files.context() if tls is not None else None
        for m in self.members:
            if context is not None:
                m.scheme, m.ssl_context = "https", context
            m.args = [
                binary,
                f"--name={m.name}",
                f"--data-dir={m.data_dir}",
                f"--listen-client-urls={m.client_url}",
                f"--advertise-client-urls={m.client_url}",
                f"--listen-peer-urls={m.peer_url}",
                f"--initial-advertise-peer-urls={m.peer_url}",
                f"--initial-cluster={initial}",
                "--initial-cluster-state=new",
                f"--initial-cluster-token={token}",
                "--logger=zap",
                "--log-level=warn",
            ]
            if tls is not None:
                m.args += [
                    f"--cert-file={tls.server_cert}",
                    f"--key-file={tls.server_key}",
                    f"--trusted-ca-file={tls.ca}",
                    "--client-cert-auth",
                ]

    @property
    def client_urls(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = 30.0) -> None:
        for m in self.members:
            m.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every running, unpaused member reports health (leader + quorum)."""
        deadline = Deadline(timeout)
        while True:
            live = [m for m in self.members if m.running and not m.paused]
            sick = [m.name for m in live if not m.health()]
            if live and not sick:
                return
            dead = [m.name for m in self.members if m.process is not None and not m.running]
            if deadline.expired or dead:
                raise LocalClusterError(
                    f"etcd members not healthy after {timeout:.0f}s: unhealthy={sick} "
                    f"exited={dead}; {self._log_tail(dead or sick)}"
                )
            time.sleep(0.05)

    def _log_tail(self, names: list[str]) -> str:
        """The last log line of each named member: the data dir is removed on close."""
        tails = []
        for name in names:
            try:
                lines = (self.base_dir / f"{name}.log").read_text(errors="replace").splitlines()
            except OSError:
                continue
            if lines:
                tails.append(f"{name}: {lines[-1][:300]}")
        return "; ".join(tails) or f"logs in {self.base_dir}"

    def heal(self, timeout: float = 30.0) -> None:
        """Bring every member back (resume the paused, restart the stopped) and wait."""
        for m in self.members:
            m.resume()
            m.start()
        self.wait_healthy(timeout)

    def leader(self) -> EtcdMember:
        """The member that is the Raft leader now (asks each member's status)."""
        for m in self.members:
            if not m.running or m.paused:
                continue
            request = urllib.request.Request(m.client_url + "/v3/maintenance/status", b"{}")
            try:
                with urllib.request.urlopen(request, timeout=1.0, context=m.ssl_context) as r:
                    status = json.loads(r.read())
            except (OSError, ValueError):
                continue
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return m
        raise LocalClusterError("no member is the etcd leader")

    def followers(self) -> list[EtcdMember]:
        """The running members that are not the Raft leader now."""
        leader = self.leader()
        return [m for m in self.members if m is not leader]

    def client(self, **options: Any) -> EtcdStore:
        if self.tls is not None:
            options.setdefault("tls", self.tls.client_files)
        return EtcdStore.connect(self.client_urls, **options)

    def close(self) -> None:
        for m in self.members:
            m.kill()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalEtcdCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
