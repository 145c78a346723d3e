"""Deposals: `deposals/<by>/<target>` = `{epoch, proof}` (decision 0022).

Node `by` deposed `target`'s candidacy at `epoch`, whose key it proved unchanged since revision
`proof` for longer than its proof of life. Read from etcd, so hostile input (rule 14): a key or
value that is not a deposal is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.keys import Keys
from sidecar.records import json_object
from sidecar.settings import DNS_LABEL
from sidecar.store.model import KeyValue

MAX_DEPOSAL_BYTES = 256


@dataclass(frozen=True)
class Deposal:
    """Node `by` deposed `target`'s candidacy at `epoch`, silent since revision `proof`."""

    by: str
    target: str
    epoch: int
    proof: int


def parse_deposal(keys: Keys, kv: KeyValue) -> Deposal | None:
    """The deposal in `kv`, or None when it is not one."""
    by, _, target = kv.key.removeprefix(keys.deposals).partition("/")
    if not (DNS_LABEL.fullmatch(by) and DNS_LABEL.fullmatch(target)):
        return None
    document = json_object(kv.value, MAX_DEPOSAL_BYTES)
    if document is None:
        return None
    epoch, proof = _revision(document.get("epoch")), _revision(document.get("proof"))
    if epoch is None or proof is None:
        return None
    return Deposal(by, target, epoch, proof)


def _revision(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None
