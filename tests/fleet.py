"""Real `ringside run` processes against the test etcd, and the invariant checker.

`Fleet` starts sidecars as separate processes (each with its own API port, lock file and log),
so kill -9, SIGTERM and SIGSTOP act on real processes. `InvariantChecker` polls every sidecar
while a scenario runs and records every violation of the coordination invariants:

- at most one node claims leadership for any epoch;
- the epochs claimed only increase: once a claim for epoch E was seen, no claim for a lower
  epoch may be answered to a request sent after that;
- every claim carries a positive validity (no claim past the node's validity deadline);

and `wait_until_converged` checks the last one: all sidecars agree on members and leader.
Later chaos tests reuse both.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import aiohttp
import pytest
import yaml

from sidecar.api_token import read_token, token_path
from sidecar.testing.localcluster import LocalEtcdCluster, die_with_parent, free_port
from tests.waiting import wait_for

POLL_TIMEOUT_S = 0.5
FLEET_TTL = 5  # seconds: short enough for crash scenarios, long enough for a busy 2-core CI


async def fetch_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """GET `url` as JSON; None when it does not answer within the poll timeout, or not JSON."""
    try:
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S)
        async with session.get(url, timeout=timeout) as response:
            document: dict[str, Any] = await response.json()
            return document
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None


class Member(Protocol):
    """One sidecar as the checker sees it: a process here, a container in tests/compose."""

    @property
    def node_id(self) -> str: ...

    @property
    def running(self) -> bool: ...


M = TypeVar("M", bound=Member)


class Observed(Protocol[M]):
    """What `InvariantChecker` and `wait_until_converged` need of a group of sidecars."""

    @property
    def sidecars(self) -> Mapping[str, M]: ...

    def running(self) -> list[M]: ...

    async def get(self, sidecar: M, path: str) -> dict[str, Any] | None: ...


def agreed_leader(
    statuses: Sequence[dict[str, Any] | None],
    members: Iterable[str],
    allowed: Collection[str],
) -> dict[str, Any] | None:
    """The `/v1/status` of the leader that all `statuses` agree on, or None: every one
    answered, lists exactly `members` and names the same leader (one of `allowed`) and epoch,
    and that node alone claims to lead."""
    views = set()
    claimers = []
    for status in statuses:
        if status is None:
            return None
        try:
            listed = tuple(sorted(str(m["node_id"]) for m in status["members"]))
            views.add((listed, status["leader"], status["epoch"]))
        except (KeyError, TypeError):
            return None
        if status.get("is_leader") is True:
            claimers.append(status)
    if len(views) != 1 or len(claimers) != 1:
        return None
    listed, leader, _ = views.pop()
    if list(listed) != sorted(members) or leader not in allowed:
        return None
    return claimers[0] if claimers[0].get("node_id") == leader else None


async def wait_until_converged(
    fleet: Observed[M],
    members: Iterable[str],
    *,
    within_s: float,
    leader_among: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Wait until every running sidecar reports exactly `members` and one same leader;
    return that leader's status. Fails the test with the last statuses seen."""
    expected = sorted(members)
    allowed = set(leader_among) if leader_among is not None else set(expected)
    deadline = time.monotonic() + within_s
    statuses: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline:
        statuses = [await fleet.get(s, "/v1/status") for s in fleet.running()]
        if statuses and (leader := agreed_leader(statuses, expected, allowed)) is not None:
            return leader
        await asyncio.sleep(0.05)
    pytest.fail(f"not converged on {expected} within {within_s} s: {statuses}")


@dataclass
class Sidecar:
    """One `ringside run` process."""

    node_id: str
    port: int
    env: dict[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    detached: bool = False  # own session, killed with its parent: see `Fleet`
    code: Path | None = None  # run the `sidecar` package found here (another release)
    wrapper: tuple[str, ...] = ()  # a command to run it under, e.g. prlimit

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth_header(self) -> dict[str, str]:
        """`Authorization` for this sidecar's mutating routes: its configured token, else the
        one it generated beside its lock file (empty before it started)."""
        token = self.env.get("RINGSIDE_HTTP_TOKEN") or read_token(
            token_path(None, Path(self.env["RINGSIDE_LOCK_FILE"]))
        )
        return {"Authorization": f"Bearer {token}"} if token else {}

    def start(self) -> None:
        """Start the process; when `detached`, call it from the thread that will outlive it
        (the kernel's parent-death signal follows the thread that forked)."""
        detach: dict[str, Any] = {}
        if self.detached:
            detach = {"start_new_session": True, "preexec_fn": die_with_parent}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "sidecar", "run", *self.args],
                env=self.env,
                cwd=self.code,  # `-m` looks in the working directory first
                stdout=log,
                stderr=log,
                **detach,
            )
        self.paused = False

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        if sig is signal.SIGSTOP:
            self.paused = True
        elif sig is signal.SIGCONT:
            self.paused = False

    def wait_exit(self, within_s: float) -> int:
        assert self.process is not None
        return self.process.wait(within_s)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Fleet:
    """Sidecars of one ringside cluster (a name of their own, so tests never meet).

    `detached=True` (the chaos campaign) starts each sidecar in a session of its own, so a
    Ctrl-C at the terminal reaches only the caller, which stops them itself, and ties it to
    the caller's life (Linux), so none outlives a caller killed with SIGKILL.
    """

    def __init__(
        self,
        etcd: LocalEtcdCluster,
        base_dir: Path,
        *,
        lease_ttl: int = 5,
        detached: bool = False,
    ) -> None:
        self.etcd = etcd
        self.base_dir = base_dir
        self.lease_ttl = lease_ttl
        self.detached = detached
        self.cluster = f"t{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.sidecars: dict[str, Sidecar] = {}
        self._session: aiohttp.ClientSession | None = None

    def add(
        self,
        name: str,
        *,
        node_id: str | None = None,
        eligible: bool = True,
        settings: dict[str, Any] | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        code: Path | None = None,
        wrapper: tuple[str, ...] = (),
    ) -> Sidecar:
        """Start a sidecar; `name` keys its files and its entry here, `node_id` defaults to it
        (give two sidecars one node id to play two machines that claim the same name). `code`
        is a directory holding another release's `sidecar` package, to run that one."""
        running = self.sidecars.get(name)
        if running is not None and running.running:  # it would be orphaned, never stopped
            raise AssertionError(f"a sidecar named {name} runs already: restart it with start()")
        node_id = node_id or name
        config = self.base_dir / f"{name}.yaml"
        config.write_text(yaml.safe_dump(settings or {}))
        env = {
            **os.environ,
            "RINGSIDE_CONFIG": str(config),
            "RINGSIDE_CLUSTER": self.cluster,
            "RINGSIDE_NODE_ID": node_id,
            "RINGSIDE_ETCD_ENDPOINTS": ",".join(self.etcd.client_urls),
            "RINGSIDE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
            "RINGSIDE_LEASE_TTL": str(self.lease_ttl),
            "RINGSIDE_LEADER_ELIGIBLE": "true" if eligible else "false",
            "RINGSIDE_LOCK_FILE": str(self.base_dir / f"{name}.lock"),
            **(env or {}),
        }
        port = int(env["RINGSIDE_HTTP_LISTEN"].rsplit(":", 1)[1])
        sidecar = Sidecar(
            node_id,
            port,
            env,
            self.base_dir / f"{name}.log",
            args,
            detached=self.detached,
            code=code,
            wrapper=wrapper,
        )
        self.sidecars[name] = sidecar
        sidecar.start()
        return sidecar

    def running(self) -> list[Sidecar]:
        return [s for s in self.sidecars.values() if s.running and not s.paused]

    async def get(self, sidecar: Sidecar, path: str) -> dict[str, Any] | None:
        """One GET to a sidecar's API; None when it does not answer in time."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return await fetch_json(self._session, sidecar.url + path)

    async def wait_converged(
        self, members: Iterable[str], *, within_s: float, leader_among: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """See `wait_until_converged`."""
        return await wait_until_converged(
            self, members, within_s=within_s, leader_among=leader_among
        )

    async def close(self) -> None:
        for sidecar in self.sidecars.values():
            if sidecar.process is not None and sidecar.running:
                if sidecar.paused:
                    sidecar.signal(signal.SIGCONT)
                sidecar.process.kill()
                sidecar.process.wait()
        if self._session is not None:
            await self._session.close()


@dataclass
class Claim:
    node_id: str
    epoch: int
    sent: float
    received: float
    valid_for_s: float


@dataclass
class InvariantChecker(Generic[M]):
    """Polls `/v1/leader` on every sidecar of `fleet` until stopped; see the module doc."""

    fleet: Observed[M]
    interval_s: float = 0.05
    claims: list[Claim] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    answered: list[tuple[str, float]] = field(default_factory=list)  # (node_id, sent) of each
    polls: int = 0
    _owner: dict[int, str] = field(default_factory=dict)
    _highest_seen: tuple[int, float] = (0, 0.0)  # (epoch, when the claim was received)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InvariantChecker[M]:
        self._task = asyncio.create_task(self._poll_forever())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        assert not self.violations, "invariants violated:\n" + "\n".join(self.violations)
        assert self.polls > 0, "the checker never polled a sidecar"

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._poll(s) for s in list(self.fleet.sidecars.values())))
            await asyncio.sleep(self.interval_s)

    async def _poll(self, sidecar: M) -> None:
        if not sidecar.running:
            return
        sent = time.monotonic()
        answer = await self.fleet.get(sidecar, "/v1/leader")
        received = time.monotonic()
        if answer is None:
            return
        self.polls += 1
        self.answered.append((sidecar.node_id, sent))
        if answer.get("is_self"):
            self.observe(Claim(sidecar.node_id, answer["epoch"], sent, received,
                               answer.get("valid_for_s", 0.0)))  # fmt: skip

    def observe(self, claim: Claim) -> None:
        """Check one leadership claim against everything seen before it."""
        self.claims.append(claim)
        owner = self._owner.setdefault(claim.epoch, claim.node_id)
        if owner != claim.node_id:
            self.violations.append(f"epoch {claim.epoch} claimed by {owner} and by {claim.node_id}")
        highest, seen_at = self._highest_seen
        if claim.epoch < highest and claim.sent > seen_at:
            self.violations.append(
                f"{claim.node_id} claimed epoch {claim.epoch} after epoch {highest} was claimed"
            )
        if claim.epoch > highest:
            self._highest_seen = (claim.epoch, claim.received)
        if claim.valid_for_s <= 0:
            self.violations.append(f"{claim.node_id} claimed epoch {claim.epoch} with no validity")

    async def wait_claim(self, epoch: int, within_s: float = 2.0) -> None:
        """Wait until the checker itself has seen someone claim `epoch`."""
        what = f"the checker saw no claim of epoch {epoch}"
        await wait_for(
            lambda: epoch in self._owner, within_s, what=what, interval_s=self.interval_s
        )

    def epochs(self) -> list[int]:
        return sorted(self._owner)

    def claimed_by(self, node_id: str) -> list[int]:
        return sorted({c.epoch for c in self.claims if c.node_id == node_id})
