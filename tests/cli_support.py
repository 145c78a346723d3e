"""Running the `ringside` command as an operator would: a separate process, a clean environment,
and readers for what it prints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any RINGSIDE_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGSIDE_")}
    return {**env, **extra}


async def ringside(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sidecar", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=clean_env(**env), timeout=60
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("ringside: "), result.stderr
    assert text in result.stderr, result.stderr


def table(stdout: str) -> dict[str, list[str]]:
    """The member rows of a status or members table, by node id, split into cells."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NODE "))
    rows = [line.split() for line in lines[start + 1 :] if not line.startswith("missing: ")]
    return {row[0]: row for row in rows}
