"""compose/README.md's command blocks, run as written with real containers (issue 14), by
`make test-compose`. Placeholders and the "edit:" steps the guide asks for are replaced
explicitly (`tests.guides.block` fails when one is no longer in the text)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from sidecar import __version__
from sidecar.testing.localcluster import free_port
from tests.compose.cluster import owned_by_sidecar
from tests.guides import ROOT, block, env_file_edits, gen_tls, ok, run_on_host

pytestmark = [pytest.mark.compose, pytest.mark.timeout(600)]

GUIDE = "compose/README.md"


def workspace(tmp_path: Path) -> Path:
    """A checkout of the files the guide uses; `compose/` is a copy, since the guide writes
    its env files there."""
    where = tmp_path / "checkout"
    where.mkdir()
    shutil.copytree(ROOT / "compose", where / "compose", ignore=shutil.ignore_patterns("state"))
    for entry in ROOT.iterdir():
        if entry.name not in ("compose", ".git") and not entry.name.startswith(".venv"):
            (where / entry.name).symlink_to(entry)
    return where


def test_build_images_block() -> None:
    """Both ways to the image: the script, and by hand (wheels, then docker build). Run in the
    checkout itself: `dist/` is where the Dockerfile takes the wheels from."""
    ok(run_on_host(block(GUIDE, "build-images"), ROOT))
    shown = subprocess.run(
        ["docker", "image", "inspect", f"ringside:{__version__}", "--format", "{{.Config.User}}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout.strip() == "ringside"


def test_local_cluster_block(tmp_path: Path) -> None:
    """The whole cluster on this host, a leader killed, another elected, and `down -v`."""
    env = {"RINGSIDE_LOCAL_STATE": str(tmp_path / "state")}  # nothing written in compose/
    where = ROOT  # build-images.sh builds from the checkout
    try:
        shown = ok(run_on_host(block(GUIDE, "local-cluster"), where, **env))
    finally:
        run_on_host(
            "docker-compose -p ringside -f compose/local-cluster.yml down -v -t 5", where, **env
        )
    leaders = re.findall(r"^ringrift: leader (hetzner-cpu\d) \(epoch (\d+)\)", shown, re.M)
    assert len(leaders) == 2, shown
    (first, first_epoch), (second, second_epoch) = leaders
    # Right after the kill, hetzner-cpu1 may still lead in everyone's view: its lease runs for
    # up to 5 s more. Then it leads at the same epoch; anyone else leads at a higher one.
    if second == first:
        assert second_epoch == first_epoch, shown
    else:
        assert int(second_epoch) > int(first_epoch), shown
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=ringside"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert left.stdout.strip() == ""


def voter_host(tmp_path: Path) -> dict[str, str]:
    """What `voter.env` points at on a voter: its etcd config (etcd/hetzner-cpu1.conf.yml as
    a one-member cluster on 127.0.0.1, where the health check asks), the TLS files from
    gen-tls.sh, and the sidecar's config and secrets, owned as the guide says."""
    pki = tmp_path / "pki"
    gen_tls(pki, "--extra-san", "IP:127.0.0.1")
    etcd_dir = tmp_path / "etc-etcd"
    (etcd_dir / "pki").mkdir(parents=True)
    for name in ("ca", "peer-ca", "hetzner-cpu1", "hetzner-cpu1-peer"):
        shutil.copy(pki / f"{name}.pem", etcd_dir / "pki" / f"{name}.pem")
    for name in ("hetzner-cpu1-key", "hetzner-cpu1-peer-key"):
        shutil.copy(pki / f"{name}.pem", etcd_dir / "pki" / f"{name}.pem")
        (etcd_dir / "pki" / f"{name}.pem").chmod(0o600)  # root's: etcd runs as root
    config = yaml.safe_load((ROOT / "etcd/hetzner-cpu1.conf.yml").read_text())
    loopback = {
        "listen-client-urls": "https://127.0.0.1:2379",
        "advertise-client-urls": "https://127.0.0.1:2379",
        "listen-peer-urls": "https://127.0.0.1:2380",
        "initial-advertise-peer-urls": "https://127.0.0.1:2380",
        "initial-cluster": "hetzner-cpu1=https://127.0.0.1:2380",
        "listen-metrics-urls": "http://127.0.0.1:2381",
    }
    (etcd_dir / "etcd.conf.yml").write_text(yaml.safe_dump({**config, **loopback}))

    ringside_dir = tmp_path / "etc-ringside"
    secrets = tmp_path / "secrets"
    for folder in (ringside_dir, secrets):
        folder.mkdir()
        owned_by_sidecar(folder, 0o700)
    for name, source in (("etcd-ca", "ca"), ("etcd-client", "client-ringside"),
                         ("etcd-client-key", "client-ringside-key")):  # fmt: skip
        shutil.copy(pki / f"{source}.pem", ringside_dir / f"{name}.pem")
    shutil.copy(ROOT / "deploy/ringside.yaml", ringside_dir / "ringside.yaml")
    (secrets / "etcd.password").write_text("unused-without-auth\n")
    (secrets / "http.token").write_text("voter-token\n")
    for path in [*ringside_dir.iterdir(), *secrets.iterdir()]:
        owned_by_sidecar(path, 0o600)
    return {
        "HOST_ETCD_DIR": str(etcd_dir),
        "RINGSIDE_ETCD_ENDPOINTS": "https://127.0.0.1:2379",
        "HOST_RINGSIDE_DIR": str(ringside_dir),
        "RINGSIDE_SECRETS": str(secrets),
        "RINGSIDE_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
    }


def test_voter_block(tmp_path: Path) -> None:
    """A voter: etcd from its own config file and the sidecar beside it, both on the host's
    network; the sidecar leads its one-member cluster. Needs 2379-2381 free on 127.0.0.1."""
    for port in (2379, 2380, 2381):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"127.0.0.1:{port} is taken"
    where = workspace(tmp_path)
    edits = voter_host(tmp_path / "host")
    edit = env_file_edits("compose/voter.env", edits)
    copy = "cp compose/voter.env.example compose/voter.env"
    script = block(GUIDE, "voter", **{copy: f"{copy} && {edit}"})
    compose = "docker-compose --env-file compose/voter.env -f compose/voter.yml"
    try:
        result = run_on_host(script, where)
        if result.returncode != 0:  # what etcd and the sidecar said, for the failure message
            result.stderr += run_on_host(f"{compose} logs --tail 30", where).stdout
        shown = ok(result)
    finally:
        run_on_host(f"{compose} down -v -t 5", where)
    assert re.search(r"leader hetzner-cpu1 \(epoch \d+\), 1 alive, quorum ok", shown), shown


def test_image_copy_block(tmp_path: Path) -> None:
    """`docker save | ssh docker load` to two nodes; ssh reaches this machine, whose daemon
    loads the image for real."""
    shown = ok(run_on_host(block(GUIDE, "image-copy"), tmp_path))
    assert shown.count(f"Loaded image: ringside:{__version__}") == 2, shown
    assert Path("/tmp/ringside-0.2.0.tar.gz").stat().st_size > 10_000_000
    Path("/tmp/ringside-0.2.0.tar.gz").unlink()
