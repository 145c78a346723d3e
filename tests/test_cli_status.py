"""`ringside status`, `members`, `leader` and `resign` as an operator runs them: real processes
against real sidecars on the real 3-member etcd, and against things that are not sidecars."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar import __version__
from sidecar.testing.localcluster import LocalEtcdCluster, free_port
from tests.cli_support import assert_one_line_error, clean_env, ringside, table
from tests.fleet import FLEET_TTL, Fleet, Sidecar
from tests.waiting import wait_for

TTL = FLEET_TTL
VOTERS = ("hetzner-cpu1", "hetzner-cpu2")
OBSERVER = "lambda-gh200-3"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"  # UTC, with the zone


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    path = tmp_path / "distributed_hosts.yaml"
    hosts = {name: {"ssh_host": "203.0.113.9"} for name in (*VOTERS, OBSERVER, "mac-studio")}
    path.write_text(yaml.safe_dump({"hosts": hosts}))
    return path


async def start_fleet(fleet: Fleet, inventory: Path | None = None) -> dict[str, Any]:
    """Two voters and a labelled observer, converged; returns the leader's status."""
    common: dict[str, Any] = {"inventory": str(inventory)} if inventory else {}
    for node_id in VOTERS:
        fleet.add(node_id, settings=common)
    fleet.add(OBSERVER, eligible=False, settings={**common, "labels": {"gpu": "gh200"}})
    return await fleet.wait_converged((*VOTERS, OBSERVER), within_s=20, leader_among=VOTERS)


async def test_status_in_every_format_with_the_fleets_values(fleet: Fleet, inventory: Path) -> None:
    leader = await start_fleet(fleet, inventory)
    observer = fleet.sidecars[OBSERVER]
    api = await fleet.get(observer, "/v1/status")
    assert api is not None
    addresses = {m["node_id"]: m["addresses"] for m in api["members"]}
    summary = (
        f"{fleet.cluster}: leader {leader['node_id']} (epoch {leader['epoch']}), "
        "3 alive, quorum ok (3/3 voters)"
    )

    result = await ringside("status", "--sidecar", observer.url)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == summary
    # Why this leader leads: its first election, here; then the member table.
    assert lines[1] == (
        f"last leader change: {leader['node_id']} (epoch {leader['epoch']}): "
        "there was no leader [election]"
    )
    assert lines[2].split() == ["NODE", "ROLE", "STATE", "ADDRESS", "SINCE"]
    rows = table(result.stdout)
    assert sorted(rows) == sorted((*VOTERS, OBSERVER))
    follower = next(n for n in VOTERS if n != leader["node_id"])
    assert rows[leader["node_id"]][1:3] == ["leader", "alive"]
    assert rows[follower][1:3] == ["follower", "alive"]
    assert rows[OBSERVER][1:4] == ["observer", "alive", addresses[OBSERVER][0]]
    assert re.fullmatch(r"\d+s|\d+m\d\ds", rows[OBSERVER][4])
    assert result.stdout.splitlines()[-1] == "missing: mac-studio"

    wide = await ringside("status", "--sidecar", observer.url, "-o", "wide")
    assert wide.returncode == 0, wide
    assert wide.stdout.splitlines()[2].split()[-1] == "LABELS"
    assert table(wide.stdout)[OBSERVER][3] == ",".join(addresses[OBSERVER])
    assert table(wide.stdout)[OBSERVER][5] == "-"  # no orchestrator check configured
    assert table(wide.stdout)[OBSERVER][6] == __version__  # for rolling upgrades
    assert table(wide.stdout)[OBSERVER][7] == "gpu=gh200"

    for output, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        result = await ringside("status", "--sidecar", observer.url, "-o", output)
        assert result.returncode == 0, result
        document = parse(result.stdout)
        assert document["cluster"] == fleet.cluster
        assert document["node_id"] == OBSERVER
        assert (document["leader"], document["epoch"]) == (leader["node_id"], leader["epoch"])
        assert sorted(m["node_id"] for m in document["members"]) == sorted((*VOTERS, OBSERVER))
        assert document["inventory_missing"] == ["mac-studio"]
        assert document["voters"]["healthy"] == 3

    # Without --sidecar, the address comes from the configuration (http.listen).
    from_config = await ringside("status", RINGSIDE_HTTP_LISTEN=f"127.0.0.1:{observer.port}")
    assert from_config.returncode == 0, from_config
    assert from_config.stdout.splitlines()[0] == summary


async def test_no_leader_is_exit_1(fleet: Fleet) -> None:
    """Only observers: they register, nobody campaigns, so there is no leader."""
    for node_id in ("lambda-gh200-3", "vast-29118471"):
        fleet.add(node_id, eligible=False)
    first = fleet.sidecars["lambda-gh200-3"]
    await wait_alive(fleet, first, 2)

    result = await ringside("status", "--sidecar", first.url)
    assert result.returncode == 1, result
    assert (
        result.stdout.splitlines()[0]
        == f"{fleet.cluster}: no leader, 2 alive, quorum ok (3/3 voters)"
    )
    assert {row[1] for row in table(result.stdout).values()} == {"observer"}

    leader = await ringside("leader", "--sidecar", first.url)
    assert leader.returncode == 1, leader
    assert leader.stdout.startswith("no leader")

    not_ready = await ringside("status", "--sidecar", first.url, "--wait-ready", "0.5")
    assert not_ready.returncode == 1, not_ready
    assert "not ready after 0.5 s: no leader known" in not_ready.stderr


async def wait_alive(fleet: Fleet, sidecar: Sidecar, count: int, within_s: float = 15) -> None:
    async def seen() -> bool:
        status = await fleet.get(sidecar, "/v1/status")
        return bool(status and status["synced"] and status["alive"] == count)

    await wait_for(seen, within_s, what=f"{sidecar.node_id} did not see {count} members")


async def test_wait_ready_waits_for_a_sidecar_just_started(fleet: Fleet) -> None:
    sidecar = fleet.add("hetzner-cpu1")
    result = await ringside("status", "--sidecar", sidecar.url, "--wait-ready", "20")
    assert result.returncode == 0, result
    assert result.stdout.startswith(f"{fleet.cluster}: leader hetzner-cpu1 (epoch ")


@pytest.mark.parametrize("command", [("status",), ("members",), ("leader",), ("resign",)])
async def test_a_sidecar_that_is_down_is_exit_3(command: tuple[str, ...]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = await ringside(*command, "--sidecar", closed)
    assert_one_line_error(result, 3, f"cannot reach the sidecar at {closed}")


class _NotASidecar(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def not_a_sidecar(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_NotASidecar,), {"body": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("not_a_sidecar", "complaint"),
    [
        (b"<html>502 Bad Gateway</html>", "not JSON"),
        (b"", "not JSON"),
        (b'{"status": "ok"}', "wrong shape: status has no 'voters'"),
        (b"[1, 2]", "not an object"),
    ],
    indirect=["not_a_sidecar"],
)
async def test_a_garbled_answer_is_exit_3(not_a_sidecar: str, complaint: str) -> None:
    result = await ringside("status", "--sidecar", not_a_sidecar)
    assert_one_line_error(result, 3, complaint)


async def test_status_read_from_etcd_directly(
    fleet: Fleet, etcd: LocalEtcdCluster, inventory: Path
) -> None:
    leader = await start_fleet(fleet)
    endpoints = ",".join(etcd.client_urls)
    direct = ("status", "--etcd", endpoints, "--cluster", fleet.cluster)

    result = await ringside(*direct, "-o", "json")
    assert result.returncode == 0, result
    document = json.loads(result.stdout)
    assert (document["node_id"], document["is_leader"]) == (None, False)
    assert (document["leader"], document["epoch"]) == (leader["node_id"], leader["epoch"])
    assert sorted(m["node_id"] for m in document["members"]) == sorted((*VOTERS, OBSERVER))
    assert document["quorum_ok"] is True
    assert document["voters"] == {"total": 3, "healthy": 3, "etcd_leader": etcd.leader().name}

    text = await ringside(*direct, "--inventory", str(inventory))
    assert text.returncode == 0, text
    assert text.stdout.splitlines()[0] == (
        f"{fleet.cluster}: leader {leader['node_id']} (epoch {leader['epoch']}), "
        "3 alive, quorum ok (3/3 voters)"
    )
    assert table(text.stdout)[OBSERVER][1] == "observer"
    assert text.stdout.splitlines()[-1] == "missing: mac-studio"


async def test_status_from_etcd_when_no_endpoint_answers_is_exit_3() -> None:
    endpoints = ",".join(f"http://127.0.0.1:{free_port()}" for _ in range(3))
    result = await ringside("status", "--etcd", endpoints)
    assert_one_line_error(result, 3, "cannot reach etcd at ")


class LineReader:
    """The stdout of a running `ringside status --watch`, read line by line with deadlines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def until(self, pattern: str, within_s: float = 15) -> str:
        deadline = time.monotonic() + within_s
        assert self.process.stdout is not None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), remaining)
            except asyncio.TimeoutError:
                break
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            self.seen.append(line)
            if re.fullmatch(pattern, line):
                return line
        pytest.fail(f"no line matching {pattern!r} within {within_s} s; saw {self.seen}")


@asynccontextmanager
async def watching(*args: str) -> AsyncIterator[LineReader]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "status", "--watch", *args,
        stdout=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip
    try:
        yield LineReader(process)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@pytest.mark.parametrize("source", ["sidecar", "etcd"])
async def test_watch_prints_a_line_when_a_member_joins_and_leaves(
    fleet: Fleet, etcd: LocalEtcdCluster, source: str
) -> None:
    first = fleet.add("hetzner-cpu1")
    await fleet.wait_converged(["hetzner-cpu1"], within_s=15)
    if source == "sidecar":
        args: tuple[str, ...] = ("--sidecar", first.url)
    else:
        args = ("--etcd", ",".join(etcd.client_urls), "--cluster", fleet.cluster)
    async with watching(*args) as lines:
        await lines.until(rf"{fleet.cluster}: leader hetzner-cpu1 \(epoch \d+\), 1 alive, .*")
        joining = fleet.add(OBSERVER, eligible=False)
        await lines.until(rf"{STAMP} member {OBSERVER} joined")
        joining.signal(signal.SIGTERM)
        # The sidecar's events say why (a clean stop marks the record before the revoke);
        # reading etcd by polling, the watch sees only that the member is gone.
        why = r" \(stopped\)" if source == "sidecar" else ""
        await lines.until(rf"{STAMP} member {OBSERVER} left{why}")


async def test_members_lists_and_finds_members(fleet: Fleet) -> None:
    leader = await start_fleet(fleet)
    url = fleet.sidecars[VOTERS[0]].url

    result = await ringside("members", "--sidecar", url)
    assert result.returncode == 0, result
    rows = table(result.stdout)
    assert sorted(rows) == sorted((*VOTERS, OBSERVER))
    assert rows[leader["node_id"]][1] == "leader"
    assert rows[OBSERVER][1] == "observer"

    as_json = await ringside("members", "--sidecar", url, "-o", "json")
    members = {m["node_id"]: m for m in json.loads(as_json.stdout)["members"]}
    assert sorted(members) == sorted((*VOTERS, OBSERVER))
    assert members[OBSERVER]["labels"] == {"gpu": "gh200"}
    assert members[leader["node_id"]]["is_leader"] is True

    one = await ringside("members", OBSERVER, "--sidecar", url, "-o", "json")
    assert one.returncode == 0, one
    assert json.loads(one.stdout)["node_id"] == OBSERVER

    # One JSON shape per object (issue 14: `members -o json` renamed `orchestrator` and dropped
    # `version`, `hostname`, `pid`): what `status -o json` and `/v1/members` say of a member.
    listed = await fleet.get(fleet.sidecars[VOTERS[0]], "/v1/members")
    assert listed is not None
    served = {m["node_id"]: m for m in listed["members"]}
    in_status = json.loads((await ringside("status", "--sidecar", url, "-o", "json")).stdout)
    for document in (members, served, {m["node_id"]: m for m in in_status["members"]}):
        assert set(document[OBSERVER]) == set(served[OBSERVER]), document[OBSERVER]
    assert {"version", "hostname", "pid", "orchestrator"} <= set(members[OBSERVER])
    assert members[OBSERVER]["pid"] == served[OBSERVER]["pid"]

    missing = await ringside("members", "mac-studio", "--sidecar", url)
    assert_one_line_error(missing, 1, "mac-studio is not a live member")


async def test_leader_and_resign_move_leadership(fleet: Fleet) -> None:
    token = {"http": {"token": "s3cret"}}
    for node_id in VOTERS:
        fleet.add(node_id, settings=token)
    first = await fleet.wait_converged(VOTERS, within_s=20)
    old = fleet.sidecars[first["node_id"]]
    new = next(s for s in fleet.sidecars.values() if s is not old)

    shown = await ringside("leader", "--sidecar", old.url)
    assert shown.returncode == 0, shown
    assert re.fullmatch(
        rf"leader {old.node_id} \(epoch {first['epoch']}\); this node, valid for [\d.]+ s\n"
        rf"last leader change: {old.node_id} \(epoch {first['epoch']}\): there was no leader "
        r"\[election\]\n",
        shown.stdout,
    )

    refused = await ringside("resign", "--sidecar", new.url, RINGSIDE_HTTP_TOKEN="s3cret")
    assert_one_line_error(refused, 1, f"not resigned: not the leader; {old.node_id} leads")
    no_token = await ringside("resign", "--sidecar", old.url)
    assert_one_line_error(no_token, 2, "HTTP 401")

    resigned = await ringside("resign", "--sidecar", old.url, RINGSIDE_HTTP_TOKEN="s3cret")
    assert resigned.returncode == 0, resigned
    after = await fleet.wait_converged(VOTERS, within_s=5, leader_among=[new.node_id])
    assert resigned.stdout == (
        f"resigned: epoch {first['epoch']} handed over; {new.node_id} leads at epoch "
        f"{after['epoch']}\n"
    )
    assert after["epoch"] > first["epoch"]

    for spelling in (("-o", "yaml"), ("-o", "json")):  # the grammar of every command
        other = await ringside("leader", "--sidecar", old.url, *spelling)
        assert other.returncode == 0, other
        assert yaml.safe_load(other.stdout)["leader"] == new.node_id
    shown = await ringside("leader", "--sidecar", old.url, "--json")  # the older spelling
    assert shown.returncode == 0, shown
    document = json.loads(shown.stdout)
    assert document["leader"] == new.node_id
    assert document["is_self"] is False
    # One JSON shape per object: the command prints what `/v1/leader` serves.
    assert set(document) == set(await fleet.get(old, "/v1/leader") or {})
    # Every node tells why: the old leader stepped down and stayed (its member key lives on).
    change = document["leader_change"]
    assert (change["leader"], change["epoch"], change["reason"]) == (
        new.node_id,
        after["epoch"],
        "resign",
    )
    assert change["why"] == f"{old.node_id} stepped down"
    text = await ringside("leader", "--sidecar", old.url)
    why = f"last leader change: {new.node_id} (epoch {after['epoch']}): {old.node_id} stepped down"
    assert f"{why} [resign]" in text.stdout


async def test_watch_survives_a_sidecar_restart_and_reports_what_it_missed(fleet: Fleet) -> None:
    watched = fleet.add("hetzner-cpu1")
    fleet.add("hetzner-cpu2")
    await fleet.wait_converged(VOTERS, within_s=15)
    async with watching("--sidecar", watched.url) as lines:
        await lines.until(rf"{fleet.cluster}: leader .*, 2 alive, .*")
        watched.signal(signal.SIGTERM)
        assert watched.wait_exit(5) == 0
        await lines.until(rf"{STAMP} .*cannot reach the sidecar at {watched.url}.*; retrying.*")
        fleet.add(OBSERVER, eligible=False)
        await wait_alive(fleet, fleet.sidecars["hetzner-cpu2"], 2)  # cpu2 and the observer
        watched.start()
        await lines.until(rf"{STAMP} the sidecar at {watched.url} answers again")
        await lines.until(rf"{STAMP} member {OBSERVER} joined")


async def test_version_names_the_command_and_every_members_sidecar(fleet: Fleet) -> None:
    sidecar = fleet.add("hetzner-cpu1")
    fleet.add(OBSERVER, eligible=False)
    await fleet.wait_converged(["hetzner-cpu1", OBSERVER], within_s=15)
    shown = await ringside("version", "--sidecar", sidecar.url)
    assert shown.returncode == 0, shown
    assert shown.stdout.splitlines() == [
        f"ringside {__version__} (this command)",
        f"  hetzner-cpu1: ringside {__version__}",
        f"  {OBSERVER}: ringside {__version__}",
    ]
    as_json = await ringside("version", "--sidecar", sidecar.url, "-o", "json")
    document = json.loads(as_json.stdout)
    assert document["members"] == {"hetzner-cpu1": __version__, OBSERVER: __version__}
    alone = await ringside("version", "--sidecar", f"http://127.0.0.1:{free_port()}")
    assert alone.returncode == 0, alone  # the command's own version needs no sidecar
    assert alone.stdout.startswith(f"ringside {__version__} (this command)\nmembers: not known")
