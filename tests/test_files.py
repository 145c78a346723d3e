"""Files ringside is pointed at are input too (rule 14): a device, a FIFO, a huge file or a
planted symlink gets one line and exit 2, never a hang, a MemoryError or a clobbered file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from sidecar.files import UnfitFile, read_text
from tests.cli_support import assert_one_line_error, ringside
from tests.pki import make_ca, make_cert


def test_read_text_takes_regular_files_within_the_limit(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_text("node-a\n")
    assert read_text(small, limit=7) == "node-a\n"
    with pytest.raises(UnfitFile, match="larger than 6 bytes"):
        read_text(small, limit=6)
    with pytest.raises(UnfitFile, match="not a regular file"):
        read_text(Path("/dev/zero"), limit=10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnfitFile, match="not a regular file"):
        read_text(fifo, limit=10)  # returns at once: nobody writes to it


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "config.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
async def test_an_unfit_config_file_is_one_line_and_exit_2(
    kind: str, tmp_path: Path, fifo: Path
) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (1024 * 1024) + "\n")
    path = {"device": Path("/dev/zero"), "fifo": fifo, "huge": huge}[kind]
    result = await ringside("config", "--check", RINGSIDE_CONFIG=str(path))
    reason = "larger than 1048576 bytes" if kind == "huge" else ": not a regular file"
    assert_one_line_error(result, 2, reason)


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
async def test_an_unfit_password_file_is_one_line_and_exit_2(
    target: str, tmp_path: Path, fifo: Path
) -> None:
    config = tmp_path / "ringside.yaml"
    password = fifo if target == "fifo" else Path(target)
    config.write_text(f"etcd:\n  username: n1\n  password_file: {password}\n")
    result = await ringside("config", "--check", RINGSIDE_CONFIG=str(config))
    assert_one_line_error(result, 2, ": not a regular file")


async def test_a_sidecar_refuses_a_password_file_others_can_read(tmp_path: Path) -> None:
    """As ssh refuses a private key others can read: one line naming the file, its mode and the
    fix, exit 2 (configuration), before any etcd is dialled. Once private, it is accepted."""
    secret = tmp_path / "etcd.password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    config = tmp_path / "ringside.yaml"
    config.write_text(f"etcd:\n  username: n1\n  password_file: {secret}\n")
    env = {"RINGSIDE_CONFIG": str(config), "RINGSIDE_NODE_ID": "n1",
           "RINGSIDE_LOCK_FILE": str(tmp_path / "n1.lock")}  # fmt: skip
    refused = await ringside("run", **env)
    assert_one_line_error(refused, 2, f"{secret} has mode 0644")
    assert f"run `chmod 600 {secret}`" in refused.stderr
    secret.chmod(0o600)
    checked = await ringside("config", "--check", **env)
    assert checked.returncode == 0, checked.stderr
    assert "mode" not in checked.stderr


@pytest.mark.parametrize("how", ["symlink", "same file"])
async def test_a_lock_path_pointed_at_another_file_leaves_it_alone(
    how: str, tmp_path: Path
) -> None:
    """Pointed (by mistake or on purpose) at the config file, the lock once emptied it."""
    config = tmp_path / "ringside.yaml"
    text = "lease_ttl: 10\n"
    config.write_text(text)
    lock = tmp_path / "ringside.lock"
    if how == "symlink":
        lock.symlink_to(config)
    else:
        lock = config
    result = await ringside(
        "run",
        RINGSIDE_CONFIG=str(config),
        RINGSIDE_LOCK_FILE=str(lock),
        RINGSIDE_NODE_ID="n1",
        RINGSIDE_ETCD_ENDPOINTS="http://127.0.0.1:9",
    )
    expected = "is a symbolic link" if how == "symlink" else "holds something other than"
    assert_one_line_error(result, 2, expected)
    assert config.read_text() == text
    assert stat.S_ISREG(config.lstat().st_mode)


@pytest.mark.parametrize(
    ("ca", "cert", "key", "reason"),
    [
        ("not-a-cert", None, None, "is not a PEM CA certificate"),
        ("ca", "client", "other", "are not a matching PEM certificate and key"),
        ("ca", "client", "not-a-cert", "are not a matching PEM certificate and key"),
    ],
)
async def test_tls_material_that_does_not_load_is_one_line_and_exit_2(
    tmp_path: Path, ca: str, cert: str | None, key: str | None, reason: str
) -> None:
    """It used to pass `config --check` and then crash `run` with a 60-line traceback."""
    authority = make_ca(tmp_path, "ca")
    client = make_cert(tmp_path, authority, "client", "DNS:ringside-client")
    other = make_cert(tmp_path, authority, "other", "DNS:other")
    junk = tmp_path / "not-a-cert.pem"
    junk.write_text("hello\n")
    files = {"ca": authority[0], "client": client[0], "other": other[1], "not-a-cert": junk}
    tls = {"ca": str(files[ca])}
    if cert is not None and key is not None:
        tls |= {"cert": str(files[cert]), "key": str(files[key])}
    config = tmp_path / "ringside.yaml"
    config.write_text(yaml.safe_dump({"etcd": {"tls": tls}}))
    result = await ringside("config", "--check", RINGSIDE_CONFIG=str(config))
    assert_one_line_error(result, 2, reason)


async def test_a_listen_address_that_does_not_resolve_is_exit_2() -> None:
    result = await ringside("config", "--check", RINGSIDE_HTTP_LISTEN="no-such-host.invalid:8776")
    assert_one_line_error(result, 2, "does not resolve to an address")
