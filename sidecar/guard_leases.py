"""Which lease calls the etcd guard lets through (decision 0024).

etcd applies a lease keepalive outside Raft and checks no permission on it, nor on time-to-live
(measured on 3.4.23 and 3.5.1), while lease ids are in every key's metadata. So any client
could keep a dead leader's lease alive. The guard lets a keepalive, revoke or time-to-live
through only when etcd, asked with the caller's own token, would let that caller delete every
key on the lease: the rule etcd itself applies to revoke. The guard keeps no state and needs
no credential of its own; etcd's RBAC decides, so a guard on any voter answers the same.

    verdict = await check(ask, lease_id, request.headers.get("Authorization"))
    if verdict is not None: return verdict  # etcd's own error shape: status and body

`ask(path, body, headers)` posts to etcd on loopback and returns its HTTP status and JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

LEASE_CALLS: Final = frozenset({"/v3/lease/keepalive", "/v3/lease/revoke", "/v3/lease/timetolive"})
_FIELDS: Final = frozenset({"ID", "keys"})
_DIGITS: Final = re.compile(r"[0-9]{1,19}")
PROBE_OPS: Final = 64  # per transaction; etcd refuses more than 128 (--max-txn-ops)
_PERMISSION_DENIED: Final = 7

Ask = Callable[[str, dict[str, Any], dict[str, str]], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass(frozen=True)
class Verdict:
    """A refusal to send instead of forwarding: an HTTP status and etcd's error body."""

    status: int
    body: dict[str, Any]


def lease_id(body: bytes) -> int:
    """The lease a call names: exactly one JSON object, `ID` in digits, nothing else.

    Strict on purpose: etcd's gateway reads a stream of objects from a keepalive body and its
    own JSON rules; whatever this parser could read differently from etcd's is refused.
    Raises ValueError with the reason.
    """

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError("a field is given twice")
        return dict(pairs)

    try:
        parsed = json.loads(body, object_pairs_hook=no_duplicates)
    except ValueError as e:
        raise ValueError(f"not one JSON object: {e}") from None
    if not isinstance(parsed, dict) or not set(parsed) <= _FIELDS:
        raise ValueError(f"only {sorted(_FIELDS)} may be given")
    raw = parsed.get("ID")
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not _DIGITS.fullmatch(raw) or not 0 < int(raw) < 2**63:
        raise ValueError("ID must be a lease id in digits")
    if "keys" in parsed and not isinstance(parsed["keys"], bool):
        raise ValueError("keys must be true or false")
    return int(raw)


def _refused(status: int, answer: dict[str, Any]) -> Verdict | None:
    """None when etcd granted the probe; else its refusal, with the guard named in it."""
    if status == 200 and "error" not in answer:
        return None
    if answer.get("code") != _PERMISSION_DENIED:
        return Verdict(status, answer)  # etcd's own: invalid token, no user, no leader...
    message = "etcdserver: permission denied (ringside guard: the lease holds keys of another user)"
    return Verdict(403, {"error": message, "code": _PERMISSION_DENIED, "message": message})


async def check(ask: Ask, lease: int, authorization: str | None) -> Verdict | None:
    """None if the caller may keep alive, revoke or read lease `lease`; else the refusal.

    Asked with the caller's token: the lease's keys (time-to-live), then a transaction whose
    compare never holds and whose unused branch deletes each key. etcd checks permission on
    both branches of a transaction before it compares, so it answers "permission denied"
    unless the caller may write every key, and changes nothing either way. A lease without
    keys needs only a valid token (a serializable read: etcd answers "invalid auth token" or
    "user name is empty" before it looks at permissions). With auth off, all pass.
    """
    headers = {"Authorization": authorization} if authorization else {}
    status, answer = await ask("/v3/lease/timetolive", {"ID": str(lease), "keys": True}, headers)
    if (refusal := _refused(status, answer)) is not None:
        return refusal
    try:
        if int(answer.get("TTL", -1)) < 0:
            return None  # no such lease: etcd answers the call itself
        keys = [base64.b64decode(k, validate=True) for k in answer.get("keys") or []]
    except (binascii.Error, TypeError, ValueError):
        return Verdict(502, {"error": "etcd's time-to-live answer is not what the guard knows"})
    if not keys:
        token_check = {"key": base64.b64encode(b"\0").decode(), "serializable": True, "limit": "1"}
        status, answer = await ask("/v3/kv/range", token_check, headers)
        if status == 200 or answer.get("code") == _PERMISSION_DENIED:
            return None  # a valid token (it may read nothing there, which is fine)
        return Verdict(status, answer)
    for start in range(0, len(keys), PROBE_OPS):
        chunk = [base64.b64encode(k).decode() for k in keys[start : start + PROBE_OPS]]
        never = {"key": chunk[0], "target": "CREATE", "result": "LESS", "create_revision": "0"}
        probe = {
            "compare": [never],
            "success": [{"request_delete_range": {"key": k}} for k in chunk],
        }
        status, answer = await ask("/v3/kv/txn", probe, headers)
        if (refusal := _refused(status, answer)) is not None:
            return refusal
        if answer.get("succeeded"):  # a create revision below 0: etcd broke its own rule
            return Verdict(502, {"error": "the guard's never-true compare held: keys deleted"})
    return None
