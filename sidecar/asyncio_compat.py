"""`asyncio.timeout` and `asyncio.timeout_at` on Python 3.10 as well (decision 0021): from
`async-timeout` there, which aiohttp itself uses on 3.10.

One difference cannot be papered over: on 3.10 `asyncio.TimeoutError` is not the built-in
`TimeoutError`, and asyncio, aiohttp and `async-timeout` raise the former. So code that catches
a timeout from asyncio names `asyncio.TimeoutError`, which on 3.11 and later is the built-in.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    from asyncio import timeout, timeout_at
else:  # pragma: no cover - exercised by the 3.10 pass of `make test`
    from async_timeout import timeout, timeout_at

__all__ = ["timeout", "timeout_at"]
