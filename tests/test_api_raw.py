"""The local API as raw bytes on a socket, for what an HTTP library would not send."""

from __future__ import annotations

import asyncio
import json

from tests.fleet import Fleet


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await asyncio.wait_for(reader.readexactly(length), 10)
    finally:
        writer.close()
    return status, json.loads(body)


async def test_a_token_that_is_not_utf8_is_refused_not_a_crash(fleet: Fleet) -> None:
    sidecar = fleet.add("n1", settings={"http": {"token": "s3cret"}})
    await fleet.wait_converged(["n1"], within_s=20)
    status, body = await exchange(
        sidecar.port,
        b"POST /v1/leader/resign HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer \xff\xfe\xfd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    assert status == 401, body
    assert "token" in str(body["error"])
    leader = await fleet.get(sidecar, "/v1/leader")
    assert leader is not None
    assert leader["is_self"] is True  # nothing happened


async def test_requests_aiohttp_cannot_parse_are_answered_in_json(fleet: Fleet) -> None:
    """These never reach the application's middlewares: aiohttp answers them itself."""
    sidecar = fleet.add("n1")
    await fleet.wait_converged(["n1"], within_s=20)
    huge = b"X-Padding: " + b"a" * 9000 + b"\r\n"
    cases = {
        "a header over 8 KB": b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + huge + b"\r\n",
        "a malformed request line": b"GET /health HTTP/9\r\nHost: 127.0.0.1\r\n\r\n",
        "a method that is not a token": b"G(E)T /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "an unknown method": b"BREW /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    }
    for what, request in cases.items():
        status, body = await exchange(sidecar.port, request)
        assert 400 <= status < 500, (what, status, body)
        assert isinstance(body["error"], str), (what, body)
        assert body["error"], (what, body)
    health = await fleet.get(sidecar, "/health")
    assert health is not None  # still serving
