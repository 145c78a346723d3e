"""`ringside doctor`: everything a node needs to join, checked in order, in plain words.

For a node that will not join, an operator used to run three commands and read raw library
errors. Here each layer is checked in the order a join needs it, and each problem comes with
the setting to change: the configuration this command would run with; the node's identity;
each etcd endpoint taken apart (`sidecar.probe`); logging in and the node's permissions;
the quorum and the Raft leader as this node sees them (one verdict, never "up" beside "no
endpoint answered"); the clock against etcd's; whether another live node holds this node id;
and the local pieces (the API address, the lock, the addresses it would advertise).

A node can join when no finding is `fail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sidecar.addresses import discovered_addresses
from sidecar.asyncio_compat import timeout
from sidecar.cli.etcd_check import check_etcd
from sidecar.cli.probe import Finding, Level, probe, skew_finding
from sidecar.config import LoadedConfig
from sidecar.errors import ConfigError
from sidecar.etcd_connection import open_store
from sidecar.identity import HostFacts, IdentityError, IdentityResult, resolve_identity
from sidecar.keys import Keys
from sidecar.lock import default_lock_path
from sidecar.records import MemberRecord, boot_id, printable
from sidecar.settings import RingsideConfig
from sidecar.store.base import Store
from sidecar.store.errors import AuthFailed, StoreError
from sidecar.store.model import Compare, Put

_NEVER: bytes = b"\x00ringside-doctor: a value no key holds"


@dataclass
class Section:
    """A group of findings under one title ("identity", "etcd https://...:2379")."""

    title: str
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, text: str, fix: str = "") -> None:
        self.findings.append(Finding(level, text, fix))


@dataclass
class Diagnosis:
    sections: list[Section]

    @property
    def blocking(self) -> list[Finding]:
        return [f for s in self.sections for f in s.findings if f.level == "fail"]

    def document(self) -> dict[str, object]:
        return {
            "can_join": not self.blocking,
            "sections": [
                {
                    "title": s.title,
                    "findings": [
                        {"level": f.level, "text": f.text, "fix": f.fix or None} for f in s.findings
                    ],
                }
                for s in self.sections
            ],
        }


async def diagnose(loaded: LoadedConfig, env: Mapping[str, str], facts: HostFacts) -> Diagnosis:
    config = loaded.config
    sections = [_configuration(loaded)]
    identity_section, identity = _identity(loaded, env, facts)
    sections.append(identity_section)
    probes = await asyncio.gather(*(probe(url, config.etcd.tls) for url in config.etcd.endpoints))
    reached = [p for p in probes if p.reached]
    for found in probes:
        findings = list(found.findings)
        if reached:  # another endpoint answers: this one does not block joining, fix it still
            findings = [replace(f, level="warn") if f.level == "fail" else f for f in findings]
        sections.append(Section(f"etcd endpoint {found.url}", findings))
    node_id = identity.node_id if identity is not None else None
    if reached:
        sections += await _cluster(config, node_id, facts)
    else:
        sections.append(
            Section("etcd", [Finding("fail", "no endpoint answered: nothing more to check")])
        )
    clock = skew_finding([p.skew_s for p in reached if p.skew_s is not None])
    if clock is not None:
        sections.append(Section("clock", [clock]))
    sections.append(await _local(config, identity))
    return Diagnosis(sections)


def unloadable(error: ConfigError) -> Diagnosis:
    """The diagnosis when the configuration itself is refused: nothing else can be checked."""
    section = Section("configuration")
    section.add(
        "fail", str(error), "fix the setting named; `ringside config --check` says the same"
    )
    return Diagnosis([section])


def _configuration(loaded: LoadedConfig) -> Section:
    section = Section("configuration")
    if loaded.path is None:
        section.add("ok", "no config file: defaults, the environment and flags only")
    else:
        section.add("ok", f"read {loaded.path}")
    endpoints = ", ".join(loaded.config.etcd.endpoints)
    section.add("ok", f"etcd endpoints {endpoints} (from {loaded.sources['etcd.endpoints']})")
    return section


def _identity(
    loaded: LoadedConfig, env: Mapping[str, str], facts: HostFacts
) -> tuple[Section, IdentityResult | None]:
    section = Section("identity")
    try:
        identity = resolve_identity(loaded, env, facts)
    except IdentityError as e:
        section.add("fail", str(e), "set --node-id, RINGSIDE_NODE_ID or /etc/ringrift/node-id")
        return section, None
    except ConfigError as e:
        section.add("fail", str(e))
        return section, None
    section.add("ok", f"node id {identity.node_id} (from {identity.source})")
    inventory = identity.inventory
    if inventory is not None:
        if identity.node_id in inventory.hosts:
            section.add("ok", f"{identity.node_id} is a host of the inventory")
        else:
            section.add(
                "warn",
                f"{identity.node_id} is not a host of the inventory (identity.allow_unknown_node)",
            )
    return section, identity


async def _cluster(config: RingsideConfig, node_id: str | None, facts: HostFacts) -> list[Section]:
    keys = Keys(config.cluster)
    user = keys.etcd_user(node_id) if node_id is not None else None
    try:
        store = open_store(config.etcd, default_user=user)
    except ConfigError as e:
        return [Section("etcd access", [Finding("fail", str(e))])]
    try:
        access = await _access(store, config, keys, node_id, user)
        quorum = await _quorum(store, config, keys)
        held = await _holder(store, keys, node_id, facts) if node_id else None
    finally:
        await store.close()
    return [s for s in (access, quorum, held) if s is not None]


async def _access(
    store: Store, config: RingsideConfig, keys: Keys, node_id: str | None, user: str | None
) -> Section:
    section = Section("etcd access")
    who = config.etcd.username or (user if config.etcd.effective_password else None)
    try:
        await store.get(keys.prefix, prefix=True, limit=1)
    except AuthFailed as e:
        section.add(*_auth_problem(str(e), who))
        return section
    except StoreError as e:
        section.add("fail", f"cannot read {keys.prefix}: {e}")
        return section
    section.add("ok", f"read {keys.prefix} as {who or 'an anonymous client (auth off)'}")
    if node_id is None:
        return section
    wanted = [keys.member(node_id), keys.switchover(node_id)]
    if config.leader.eligible:
        wanted.append(keys.candidate(node_id))
    for key in wanted:
        try:  # etcd checks the rights of both branches: a compare that fails writes nothing
            await store.txn([Compare.value_is(key, _NEVER)], [Put(key, _NEVER)])
        except AuthFailed:
            section.add(
                "fail",
                f"may not write {key}",
                f"run `ringside auth init` (or `auth add {node_id}`) as the operator",
            )
        except StoreError as e:
            section.add("fail", f"cannot check the right to write {key}: {e}")
        else:
            section.add("ok", f"may write {key}")
    return section


def _auth_problem(text: str, who: str | None) -> tuple[Level, str, str]:
    if "user name is empty" in text:
        return (
            "fail",
            "etcd has auth on and this node gives no credentials",
            "set etcd.password_file (the node's password from `ringside auth init`)",
        )
    if "authentication failed" in text:
        return (
            "fail",
            f"etcd refused the login as {who}: wrong password, or no such user",
            "check etcd.password_file (the operator's `ringside auth show` lists users)",
        )
    return ("fail", f"{who or 'this client'} may not read the cluster: {text}", "")


async def _quorum(store: Store, config: RingsideConfig, keys: Keys) -> Section:
    section = Section("etcd quorum")
    health = await check_etcd(store, config.etcd.endpoints, keys.prefix)
    voters = health.voters
    if not health.quorum_ok:
        section.add(
            "fail",
            f"no quorum: a linearizable read failed ({health.error}); "
            f"{voters.voters_healthy}/{voters.voters_total} voters healthy",
            "start the stopped voters; see etcd/OPERATIONS.md",
        )
        return section
    leader = health.raft_leader or "unknown"
    section.add(
        "ok",
        f"quorum: {voters.voters_healthy}/{voters.voters_total} voters healthy, Raft leader "
        f"{leader}",
    )
    return section


async def _holder(store: Store, keys: Keys, node_id: str, facts: HostFacts) -> Section:
    section = Section("membership")
    try:
        found = await store.get(keys.member(node_id))
    except StoreError as e:
        section.add("warn", f"cannot read {keys.member(node_id)}: {e}")
        return section
    if not found.kvs:
        section.add("ok", f"no live member holds {node_id}: it is free to join")
        return section
    record = MemberRecord.decode(found.kvs[0].value)
    if record is None or found.kvs[0].lease == 0:
        section.add("warn", f"{keys.member(node_id)} holds no valid record; a sidecar replaces it")
        return section
    here = record.hostname == facts.hostname and record.boot_id in ("", boot_id())
    if here:
        section.add("ok", f"a sidecar on this host holds {node_id} (pid {record.pid}): it runs")
    else:
        section.add(
            "fail",
            f"{node_id} is held by a live sidecar on {printable(record.hostname)} "
            f"(pid {record.pid}): two machines use one node id",
            "give this machine its own node id (--node-id, /etc/ringrift/node-id)",
        )
    return section


async def _local(config: RingsideConfig, identity: IdentityResult | None) -> Section:
    section = Section("local")
    section.add("ok", f"Python {platform.python_version()}")
    host, port = config.http.host, config.http.port
    if await _answers(host, port):
        section.add("ok", f"something answers on {config.http.listen} (a running sidecar?)")
    else:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe_:
                probe_.bind((host, port))
        except OSError as e:
            section.add(
                "fail",
                f"cannot serve the API on {config.http.listen}: {e.strerror}",
                "free the port or set http.listen",
            )
        else:
            section.add("ok", f"the API address {config.http.listen} is free")
    lock = config.lock_file or default_lock_path(config.cluster)
    if os.access(lock.parent, os.W_OK):
        section.add("ok", f"lock file {lock}: its directory is writable")
    else:
        section.add(
            "fail", f"cannot create the lock file {lock}", "set lock_file, or make the directory"
        )
    inventory = identity.inventory if identity is not None else None
    preferred = inventory.addresses_of(identity.node_id) if inventory and identity else ()
    advertised = tuple(
        dict.fromkeys((*config.advertise_addresses, *discovered_addresses(preferred)))
    )
    why = "advertise_addresses, then the inventory's, then this host's interfaces"
    section.add("ok", f"would advertise {', '.join(advertised) or 'no address'} ({why})")
    return section


async def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        async with timeout(1.0):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return True
    return False
