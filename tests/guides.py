"""Running the guides' command blocks as written (issue 14: a guide must not drift from the code).

Every fenced `sh` block in a guide carries a marker on the line before it,
``<!-- guide-test: NAME -->``, that names the test running it (`tests/test_guides.py`), or
``<!-- guide-test: not-run: why -->`` for the few that cannot run on this machine.

A block runs in a `Sandbox`: bash as root, in a mount namespace of its own where /etc, /opt,
/var and /root are overlays, so the guide's `install`, `chown` and `mv` really happen (owners
and modes included) and leave the machine untouched. What needs a service manager or a package
mirror (`systemctl`, `journalctl`, `apt-get`) is a shim that writes the call to a log, which
the test then reads: systemd does not run here. Everything else is real: etcdctl against a real
etcd cluster, ringside, openssl, pip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ("etcd/OPERATIONS.md", "compose/README.md", "deploy/README.md")
NOT_RUN = "not-run:"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)<!-- guide-test: (?P<name>[^>]+?) -->\n"
    r"(?P=indent)```sh\n(?P<body>.*?)^(?P=indent)```$",
    re.M | re.S,
)
_ANY_SH_FENCE = re.compile(r"^[ \t]*```sh$", re.M)

OVERLAID = ("/etc", "/opt", "/var", "/root")
SHIMMED = ("systemctl", "journalctl", "apt-get")


@dataclass(frozen=True)
class Block:
    guide: str
    name: str
    text: str


def guide_blocks(guide: str) -> list[Block]:
    """The marked `sh` blocks of `guide`, in order; raises when one has no marker."""
    text = (ROOT / guide).read_text()
    found = [
        Block(guide, m["name"].strip(), textwrap.dedent(m["body"])) for m in _FENCE.finditer(text)
    ]
    unmarked = len(_ANY_SH_FENCE.findall(text)) - len(found)
    if unmarked:
        raise AssertionError(f"{guide}: {unmarked} sh block(s) without a guide-test marker")
    return found


def block(guide: str, name: str, **substitutions: str) -> str:
    """The block `name` of `guide`, with each documentation placeholder replaced (the keys are
    the literal text, e.g. ``{"hetzner-cpuN": "hetzner-cpu1"}``); a placeholder that is not in
    the block fails, so a substitution cannot outlive the text it was written for."""
    [found] = [b for b in guide_blocks(guide) if b.name == name]
    text = found.text
    for placeholder, value in substitutions.items():
        assert placeholder in text, f"{guide} {name}: no {placeholder!r} in the block any more"
        text = text.replace(placeholder, value)
    return text


_SHIM = """#!/bin/sh
# A stand-in for {name}, which needs what this machine does not run: it records the call.
echo "{name} $*" >> {log}
"""


# `sudo`: the tests run as root already. `ssh HOST CMD` and `scp SRC HOST:DST`: the other node
# is this machine (its files are the same overlays); the copy and the command are real.
_LOCAL_SHIMS = {
    "sudo": '#!/bin/sh\nexec "$@"\n',
    "ssh": '#!/bin/sh\nshift\nexec sh -c "$*"\n',
    "scp": '#!/bin/sh\n[ "$1" = -r ] && shift\nexec cp -r "$1" "${2#*:}"\n',
}


class Sandbox:
    """Overlays of /etc, /opt, /var and /root kept across blocks, so one block builds on the
    files the one before installed, as on a real host."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.calls = state / "calls.log"
        self.shims = state / "shims"
        self.shims.mkdir(parents=True)
        self.calls.touch()
        for name in SHIMMED:
            shim = self.shims / name
            shim.write_text(_SHIM.format(name=name, log=self.calls))
            shim.chmod(0o755)
        for name, text in _LOCAL_SHIMS.items():
            (self.shims / name).write_text(text)
            (self.shims / name).chmod(0o755)

    def upper(self, directory: str) -> Path:
        """Where the overlay of `directory` keeps what the blocks wrote."""
        return self.state / "upper" / directory.strip("/")

    def path(self, inside: str) -> Path:
        """A file the blocks wrote, e.g. ``path("/etc/default/ringside")``."""
        top = "/" + inside.strip("/").split("/")[0]
        assert top in OVERLAID, inside
        return self.upper(top) / inside.strip("/").split("/", 1)[1]

    def run(
        self,
        script: str,
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        timeout: float = 180,
        network: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """`script` in the sandbox; with `network`, also in a network namespace of its own
        (only a loopback interface, down until the script brings it up): for firewall rules."""
        mounts = []
        for directory in OVERLAID:
            upper, work = self.upper(directory), self.state / "work" / directory.strip("/")
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            mounts.append(
                f"mount -t overlay overlay -o lowerdir={directory},upperdir={upper},"
                f"workdir={work} {directory}"
            )
        prologue = "\n".join(["mount --make-rprivate /", *mounts, "set -euo pipefail"])
        environment = _environment(self.shims, {**(env or {}), "HOME": "/root"})
        return subprocess.run(
            ["unshare", "--mount", *(["--net"] if network else []), "--fork", "bash", "-c",
             prologue + "\n" + script],
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip

    def call_log(self) -> list[str]:
        return self.calls.read_text().splitlines()


def run_on_host(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A block in bash on the host itself, for what a sandbox cannot hold (Docker's daemon
    sees the host's files, not an overlay): this venv's pip and ringside first on PATH, and
    `sudo`, `ssh` and `scp` as in the sandbox."""
    shims = Path(tempfile.mkdtemp(prefix="guide-shims-"))
    for name, text in _LOCAL_SHIMS.items():
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    environment = _environment(shims, env)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )


def gen_tls(out: Path, *extra: str) -> None:
    """etcd/gen-tls.sh's material for the voters in etcd/ (and the clients the guides name)."""
    subprocess.run(
        [str(ROOT / "etcd/gen-tls.sh"), "--client", "ringside", "--client", "operator", *extra,
         str(out)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def _environment(shims: Path, env: Mapping[str, str]) -> dict[str, str]:
    """A block's environment: this process's without any ringside or etcdctl setting (a block
    sets its own), then `env`; the shims, then this venv's pip and ringside, first on PATH."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("RINGSIDE_", "ETCDCTL_"))
    }
    path = f"{shims}:{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    return {**environment, **env, "PATH": path}


def env_file_edits(env_file: str, values: Mapping[str, str]) -> str:
    """The "edit:" step a guide asks of the reader, as commands: each `KEY=` line of the env
    file set to this host's value."""
    return " && ".join(f"sed -i 's|^{k}=.*|{k}={v}|' {env_file}" for k, v in values.items())


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The block's output, after asserting that it exited 0."""
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout
