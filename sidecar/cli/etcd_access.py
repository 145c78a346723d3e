"""Who may do what in etcd: one etcd user and one role per node, managed by the operator.

Each node's role can read the cluster prefix and write exactly its own keys: `members/<node_id>`
and, when it is leader-eligible, `election/<node_id>` and its own part of the cluster
history, `/ringside-history/<cluster>/<node_id>/` (rule 15; the key layout is
`sidecar.keys`). Nothing else: no other node's keys, nothing outside the prefix, no auth or
cluster-membership call (etcd reserves those to its `root` role). Lease grant and keepalive
need no permission in etcd; revoking a lease needs write access to every key on it, so a node
can revoke its own lease and no one else's. Since a node's keepalives cannot be stopped by
taking its user away, removing a node also revokes its leases and deletes its keys (root may).

Every operation here is idempotent: it looks first and changes only what differs, so running a
command twice changes nothing the second time, and it says what it did. Passwords are only
ever set when a user is created or rotated on purpose.

    access = Access(store.gateway, Keys("ringrift"))
    changes = await access.ensure_node("hetzner-cpu1", eligible=True, password=new_password)
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.keys import Keys
from sidecar.store.codec import as_int, b64, key_range, parse_range, unb64
from sidecar.store.errors import AuthFailed, StoreError
from sidecar.store.gateway import EtcdApiError, EtcdGateway
from sidecar.store.model import KeyValue, prefix_end

ROOT = "root"


def generate_password() -> str:
    """32 random bytes, URL-safe: typed by no one, read from a file by the sidecar."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, order=True)
class Permission:
    """One etcd permission: `kind` READ, WRITE or READWRITE on `key`, or on the range
    [key, range_end) when `range_end` is set."""

    kind: str
    key: str
    range_end: str = ""

    def document(self) -> dict[str, str]:
        body = {"permType": self.kind, "key": b64(self.key)}
        if self.range_end:
            body["range_end"] = b64(self.range_end)
        return body

    def describe(self) -> str:
        where = f"{self.key}*" if self.range_end == _end_of(self.key) else self.key
        if self.range_end and self.range_end != _end_of(self.key):
            where = f"[{self.key}, {self.range_end})"
        return f"{self.kind.lower()} {where}"


@dataclass(frozen=True)
class Grant:
    """A user, its roles, and what they allow."""

    user: str
    roles: tuple[str, ...]
    permissions: tuple[Permission, ...]


class Access:
    """The ringside users and roles of one cluster, over an etcd gateway logged in as root
    (or unauthenticated, before auth is enabled)."""

    def __init__(self, gateway: EtcdGateway, keys: Keys) -> None:
        self.gateway = gateway
        self.keys = keys

    def user_of(self, node_id: str) -> str:
        """The etcd user (and role) name of a node: named by cluster, so clusters can share
        one etcd."""
        return self.keys.etcd_user(node_id)

    def permissions_of(self, node_id: str, *, eligible: bool) -> tuple[Permission, ...]:
        prefix, history = self.keys.prefix, self.keys.history
        wanted = [
            Permission("READ", prefix, _end_of(prefix)),
            # The cluster history (decisions 0018, 0023): everyone reads it; a candidate
            # writes its own part only (while it leads: a txn fenced by its candidate key).
            Permission("READ", history, _end_of(history)),
            Permission("READWRITE", self.keys.member(node_id)),
            # Its own switchover request: any node may ask the leader to hand over (0016).
            Permission("READWRITE", self.keys.switchover(node_id)),
        ]
        if eligible:
            wanted.append(Permission("READWRITE", self.keys.candidate(node_id)))
            own = self.keys.history_of(node_id)
            wanted.append(Permission("READWRITE", own, _end_of(own)))
            # Its deposals of candidates that stopped proving they are alive (decision 0022).
            deposals = self.keys.deposal(node_id, "")
            wanted.append(Permission("READWRITE", deposals, _end_of(deposals)))
        return tuple(sorted(wanted))

    # --- reading ---------------------------------------------------------------------------

    async def auth_enabled(self) -> bool:
        """Whether etcd checks credentials. etcd 3.4 has no call that says so; a login with
        a name no one has answers "authentication is not enabled" only when it is not."""
        try:
            await self.gateway.call(
                "/v3/auth/authenticate", {"name": "ringside-probe", "password": "-"}
            )
        except StoreError as e:
            if "authentication is not enabled" in str(e):
                return False
            if isinstance(e, AuthFailed):
                return True
            raise
        return True

    async def users(self) -> tuple[str, ...]:
        answer = await self.gateway.call("/v3/auth/user/list", {})
        return tuple(sorted(_strings(answer.get("users"))))

    async def roles_of(self, user: str) -> tuple[str, ...]:
        answer = await self.gateway.call("/v3/auth/user/get", {"name": user})
        return tuple(sorted(_strings(answer.get("roles"))))

    async def permissions(self, role: str) -> tuple[Permission, ...]:
        answer = await self.gateway.call("/v3/auth/role/get", {"role": role})
        found: list[Permission] = []
        for perm in answer.get("perm") or []:
            if not isinstance(perm, dict):
                continue
            found.append(
                Permission(
                    str(perm.get("permType") or "READ"),
                    unb64(perm.get("key"), "a permission key").decode(errors="replace"),
                    unb64(perm.get("range_end"), "a range end").decode(errors="replace"),
                )
            )
        return tuple(sorted(found))

    async def grants(self) -> tuple[Grant, ...]:
        """Every user of etcd with its roles and permissions (root's: everything)."""
        shown: list[Grant] = []
        for user in await self.users():
            roles = await self.roles_of(user)
            allowed: list[Permission] = []
            for role in roles:
                if role != ROOT:
                    allowed += await self.permissions(role)
            shown.append(Grant(user, roles, tuple(sorted(set(allowed)))))
        return tuple(shown)

    # --- changing ----------------------------------------------------------------------------

    async def ensure_root(self, password: str) -> list[str]:
        """The root user with the root role (etcd will not enable auth without it)."""
        done = []
        if ROOT not in await self.users():
            await self.gateway.call("/v3/auth/user/add", {"name": ROOT, "password": password})
            done.append("created user root")
        if ROOT not in await self.roles_of(ROOT):
            await self.gateway.call("/v3/auth/user/grant", {"user": ROOT, "role": ROOT})
            done.append("granted role root to root")
        return done

    async def ensure_node(
        self, node_id: str, *, eligible: bool, password: str | None = None
    ) -> list[str]:
        """The node's user and role, with exactly its permissions. `password` is set only
        when the user is created here (None: the user must exist already)."""
        name = self.user_of(node_id)
        done: list[str] = []
        if name not in await self.users():
            if password is None:
                raise StoreError(f"etcd has no user {name}: add the node first")
            await self.gateway.call("/v3/auth/user/add", {"name": name, "password": password})
            done.append(f"created user {name}")
        existing = await self._role(name)
        if existing is None:
            await self.gateway.call("/v3/auth/role/add", {"name": name})
            done.append(f"created role {name}")
            existing = ()
        wanted = self.permissions_of(node_id, eligible=eligible)
        for extra in sorted(set(existing) - set(wanted)):
            body = {"role": name, "key": b64(extra.key)}
            if extra.range_end:
                body["range_end"] = b64(extra.range_end)
            await self.gateway.call("/v3/auth/role/revoke", body)
            done.append(f"revoked {extra.describe()} from {name}")
        for missing in sorted(set(wanted) - set(existing)):
            await self.gateway.call(
                "/v3/auth/role/grant", {"name": name, "perm": missing.document()}
            )
            done.append(f"granted {missing.describe()} to {name}")
        if name not in await self.roles_of(name):
            await self.gateway.call("/v3/auth/user/grant", {"user": name, "role": name})
            done.append(f"granted role {name} to user {name}")
        return done

    async def set_password(self, node_id: str, password: str) -> None:
        name = self.user_of(node_id)
        await self.gateway.call("/v3/auth/user/changepw", {"name": name, "password": password})

    async def remove_node(self, node_id: str) -> list[str]:
        """Revoke the node: delete its user and role, then its leases and keys (`drop_keys`).
        The user goes first, so that from then on the node can write nothing back."""
        name = self.user_of(node_id)
        done = []
        if name in await self.users():
            await self.gateway.call("/v3/auth/user/delete", {"name": name})
            done.append(f"deleted user {name}")
        if await self._role(name) is not None:
            await self.gateway.call("/v3/auth/role/delete", {"role": name})
            done.append(f"deleted role {name}")
        return done + await self.drop_keys(node_id)

    def owns(self, node_id: str, key: str) -> bool:
        """Whether `key` is one of the node's own keys: under the cluster prefix and named by
        the node right after its kind: `members/<node_id>`, `election/<node_id>`,
        `switchover/<node_id>`, and any `<kind>/<node_id>/...` (rule 20 puts what a node
        writes under a name of its own). A key that names the node further down, such as
        another node's lock called after it, is not its."""
        if not key.startswith(self.keys.prefix):
            return False
        parts = key[len(self.keys.prefix) :].split("/")
        return len(parts) >= 2 and parts[1] == node_id

    async def drop_keys(self, node_id: str) -> list[str]:
        """Revoke every lease the node's keys are on, then delete its member, candidate and
        switchover keys if one had no lease. Needed at once: keepalives need no permission and
        a node may grant itself a lease of 9,000,000,000 s (rule 21), so without this a removed
        node's keys, its candidacy included, could outlive its user indefinitely. Revoking a
        lease also deletes whatever else is on it; each line says which keys went.

        Kept: records without a lease that the node wrote about others (its deposals,
        `deposals/<node_id>/<target>`). They give it no presence, and deleting one would bring
        back a stale candidacy it had rightly deposed."""
        done = []
        leases = sorted({kv.lease for kv in await self._keys_of(node_id) if kv.lease})
        for lease in leases:
            answer = await self.gateway.call(
                "/v3/lease/timetolive", {"ID": str(lease), "keys": True}
            )
            held = sorted(
                unb64(k, "a key").decode(errors="replace") for k in answer.get("keys") or []
            )
            try:
                await self.gateway.call("/v3/lease/revoke", {"ID": str(lease)})
            except EtcdApiError:
                continue  # expired meanwhile: its keys went with it
            done.append(f"revoked lease {lease:x}, deleting {', '.join(held) or 'no key'}")
        presence = {
            self.keys.member(node_id),
            self.keys.candidate(node_id),
            self.keys.switchover(node_id),
        }
        for kv in await self._keys_of(node_id):  # read again: what no revoked lease held
            if kv.key not in presence:
                continue
            deleted = await self.gateway.call("/v3/kv/deleterange", key_range(kv.key, False))
            if as_int(deleted, "deleted"):
                done.append(f"deleted {kv.key}")
        return done

    async def _keys_of(self, node_id: str) -> list[KeyValue]:
        answer = await self.gateway.call("/v3/kv/range", key_range(self.keys.prefix, True))
        return [kv for kv in parse_range(answer).kvs if self.owns(node_id, kv.key)]

    async def enable(self) -> list[str]:
        if await self.auth_enabled():
            return []
        await self.gateway.call("/v3/auth/enable", {})
        return ["enabled auth"]

    async def _role(self, role: str) -> tuple[Permission, ...] | None:
        answer = await self.gateway.call("/v3/auth/role/list", {})
        if role not in _strings(answer.get("roles")):
            return None
        return await self.permissions(role)


def _end_of(prefix: str) -> str:
    """The end of the key range of `prefix`, as text (ringside's keys are ASCII)."""
    return prefix_end(prefix).decode()


def _strings(value: Any) -> Sequence[str]:
    """A list of names from etcd (absent when empty), as strings; anything else is empty."""
    if not isinstance(value, list):
        return ()
    return [item for item in value if isinstance(item, str)]
