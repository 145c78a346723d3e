"""Without `http.token`, the sidecar makes one at first start: no local process can make the
leader resign without reading a file only the sidecar's user can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import aiohttp

from sidecar.api_token import ensure_token, read_token
from tests.cli_support import ringside
from tests.fleet import Fleet


def test_a_private_token_is_kept_and_a_readable_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ringrift.token"
    first = ensure_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(path) == first == read_token(path)
    path.chmod(0o644)  # someone made it readable: it is no secret any more
    second = ensure_token(path)
    assert second != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_symlink_at_the_token_path_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    path = tmp_path / "ringrift.token"
    path.symlink_to(target)
    ensure_token(path)
    assert target.read_text() == "keep me\n"
    assert not path.is_symlink()


async def test_resign_needs_the_generated_token(fleet: Fleet) -> None:
    sidecar = fleet.add("n1")
    await fleet.wait_converged(["n1"], within_s=20)
    lock = Path(sidecar.env["RINGSIDE_LOCK_FILE"])
    token_file = lock.with_suffix(".token")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.stat().st_uid == os.geteuid()
    async with (
        aiohttp.ClientSession() as session,
        session.post(sidecar.url + "/v1/leader/resign") as anonymous,
    ):
        assert anonymous.status == 401
    refused = await ringside("resign", "--sidecar", sidecar.url)  # no way to the token file
    assert refused.returncode == 2
    assert "run as the sidecar's user" in refused.stderr
    resigned = await ringside(
        "resign",
        "--sidecar",
        sidecar.url,
        RINGSIDE_LOCK_FILE=str(lock),
        RINGSIDE_CLUSTER=fleet.cluster,
    )
    assert resigned.returncode == 0, resigned.stderr
    assert resigned.stdout.startswith("resigned: epoch ")
