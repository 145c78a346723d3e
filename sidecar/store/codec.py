"""etcd's v3 JSON gateway wire format, both ways: base64 keys, int64s as strings, omitted
zero values. Everything here is pure: JSON in, `sidecar.store.model` values out, or back.
A malformed answer raises `ProtocolError` naming the field."""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any

from sidecar.store.errors import ProtocolError
from sidecar.store.model import (
    Compare,
    DeleteResult,
    EventType,
    Get,
    Header,
    KeyValue,
    Put,
    PutResult,
    RangeResult,
    TxnOp,
    TxnResponse,
    WatchBatch,
    WatchEvent,
    prefix_end,
)

JsonObject = dict[str, Any]


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(value: Any, field: str) -> bytes:
    if value is None:
        return b""
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"etcd sent {field} that is not base64: {str(value)[:40]!r}") from None


def as_int(obj: JsonObject, field: str) -> int:
    """etcd's int64 fields come as strings and are omitted when zero."""
    value = obj.get(field, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ProtocolError(f"etcd sent {field}={value!r}, not an integer") from None


def as_bool(obj: JsonObject, field: str) -> bool:
    """etcd's bool fields are JSON booleans, omitted when false."""
    value = obj.get(field, False)
    if not isinstance(value, bool):
        raise ProtocolError(f"etcd sent {field}={value!r}, not a boolean")
    return value


def as_obj(obj: JsonObject, field: str) -> JsonObject:
    value = obj.get(field) or {}
    if not isinstance(value, dict):
        raise ProtocolError(f"etcd sent {field} that is not an object")
    return value


def as_list(obj: JsonObject, field: str) -> list[JsonObject]:
    value = obj.get(field) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProtocolError(f"etcd sent {field} that is not a list of objects")
    return value


def parse_header(answer: JsonObject) -> Header:
    header = as_obj(answer, "header")
    return Header(
        cluster_id=as_int(header, "cluster_id"),
        member_id=as_int(header, "member_id"),
        revision=as_int(header, "revision"),
        raft_term=as_int(header, "raft_term"),
    )


def parse_kv(kv: JsonObject) -> KeyValue:
    try:
        key = unb64(kv.get("key"), "key").decode()
    except UnicodeDecodeError:
        raise ProtocolError("etcd sent a key that is not UTF-8") from None
    return KeyValue(
        key=key,
        value=unb64(kv.get("value"), "value"),
        create_revision=as_int(kv, "create_revision"),
        mod_revision=as_int(kv, "mod_revision"),
        version=as_int(kv, "version"),
        lease=as_int(kv, "lease"),
    )


def parse_range(answer: JsonObject, header: Header | None = None) -> RangeResult:
    return RangeResult(
        header=header or parse_header(answer),
        kvs=tuple(parse_kv(kv) for kv in as_list(answer, "kvs")),
        count=as_int(answer, "count"),
    )


def key_range(key: str, prefix: bool) -> JsonObject:
    body: JsonObject = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return body


def encode_compare(c: Compare) -> JsonObject:
    operand = b64(c.operand) if isinstance(c.operand, bytes) else str(c.operand)
    body: JsonObject = {
        **key_range(c.key, c.prefix), "target": c.target.value, "result": c.result.value,
        c.target.field: operand,
    }  # fmt: skip
    return body


def encode_op(op: TxnOp) -> JsonObject:
    if isinstance(op, Get):
        return {"request_range": key_range(op.key, op.prefix)}
    if isinstance(op, Put):
        put: JsonObject = {"key": b64(op.key), "value": b64(op.value)}
        if op.lease:
            put["lease"] = str(op.lease)
        return {"request_put": put}
    return {"request_delete_range": key_range(op.key, op.prefix)}


def parse_op_response(answer: JsonObject, header: Header) -> TxnResponse:
    if "response_range" in answer:
        return parse_range(as_obj(answer, "response_range"), header)
    if "response_put" in answer:
        return PutResult(header)
    if "response_delete_range" in answer:
        return DeleteResult(header, as_int(as_obj(answer, "response_delete_range"), "deleted"))
    raise ProtocolError(f"etcd sent a txn response of unknown kind: {sorted(answer)}")


def parse_events(result: JsonObject) -> list[WatchBatch]:
    """Split one watch message into per-revision batches (a catching-up watch sends several
    revisions in one message)."""
    header = parse_header(result)
    batches: list[WatchBatch] = []
    pending: list[WatchEvent] = []
    for raw in as_list(result, "events"):
        kind = EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT
        prev = as_obj(raw, "prev_kv")
        event = WatchEvent(kind, parse_kv(as_obj(raw, "kv")), parse_kv(prev) if prev else None)
        if pending and pending[-1].kv.mod_revision != event.kv.mod_revision:
            batches.append(_batch(header, pending))
            pending = []
        pending.append(event)
    if pending:
        batches.append(_batch(header, pending))
    return batches


def _batch(header: Header, events: list[WatchEvent]) -> WatchBatch:
    revision = events[0].kv.mod_revision
    return WatchBatch(replace(header, revision=revision), tuple(events))
