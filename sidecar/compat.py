"""What Python 3.10 lacks, in one place, so the rest of the code reads as 3.11 code (decision
0021). The asyncio timeouts live beside it in `sidecar.asyncio_compat`, so that the commands
that must start fast (`ringside status`) import no asyncio through this module.

ringside runs where the cluster runs, and the usual GPU image (Ubuntu 22.04) has Python 3.10.
Two 3.11 names are used throughout: `typing.Self` (from `typing_extensions` on 3.10) and
`datetime.UTC` (`timezone.utc`); `datetime.fromisoformat` learned a trailing `Z` in 3.11.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - exercised by the 3.10 pass of `make test`
    from typing_extensions import Self

UTC = timezone.utc

__all__ = ["UTC", "Self", "parse_iso_time"]


def parse_iso_time(text: str) -> datetime:
    """`datetime.fromisoformat`, which takes a trailing `Z` on 3.10 too (3.11 learned it)."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)
