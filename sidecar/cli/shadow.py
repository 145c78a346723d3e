"""`ringside compare`: shadow mode, the gossip layer and ringside side by side (docs/
orchestrator.md). Both serve the orchestrator's `/status` shape; this reads both and names
every difference that matters for a cut-over: the leader, the live and the dead peers, the
voters' quorum. Standard library only, like the other read-only commands."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import click

from sidecar.cli.base import EXIT_DEGRADED, ConfigRequest, config_options, ringside
from sidecar.cli.cluster import SIDECAR_OPTION, check_sidecar_url, client_for
from sidecar.cli.reports import NoAnswer


def _status(base_url: str, who: str) -> Mapping[str, Any]:
    url = base_url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:  # http(s): --gossip checks
            document = json.loads(answer.read(1 << 20))
    except (OSError, ValueError) as e:
        raise NoAnswer(f"{who} at {base_url} did not answer /status: {e}") from None
    if not isinstance(document, dict):
        raise NoAnswer(f"{who} at {base_url} answered /status with no object")
    return document


def _peers(document: Mapping[str, Any], status: str | None) -> set[str]:
    """The peers in `all_peers` with `status` (None: the live ones in `peers`), plus self."""
    if status is None:
        peers = document.get("peers")
        found = set(peers) if isinstance(peers, dict) else set()
        node = document.get("node_id")
        return found | ({node} if isinstance(node, str) else set())
    every = document.get("all_peers")
    if not isinstance(every, dict):
        return set()
    return {
        name
        for name, entry in every.items()
        if isinstance(entry, dict) and entry.get("status") == status
    }


def differences(gossip: Mapping[str, Any], ours: Mapping[str, Any]) -> list[str]:
    """One sentence per difference between the two `/status` documents."""
    found = []
    for field, what in (
        ("leader_id", "leader"),
        ("effective_leader_id", "effective leader"),
        ("voter_quorum_ok", "voter quorum ok"),
    ):
        theirs, mine = gossip.get(field), ours.get(field)
        if theirs != mine:
            found.append(f"{what}: gossip says {theirs!r}, ringside says {mine!r}")
    for status, what in ((None, "alive"), ("dead", "dead")):
        theirs, mine = _peers(gossip, status), _peers(ours, status)
        if only := sorted(theirs - mine):
            found.append(f"{what} for gossip only: {', '.join(only)}")
        if only := sorted(mine - theirs):
            found.append(f"{what} for ringside only: {', '.join(only)}")
    return found


@ringside.command()
@click.option(
    "--gossip",
    metavar="URL",
    default="http://127.0.0.1:8770",
    show_default=True,
    callback=check_sidecar_url,
    help="The gossip layer's API (its /status).",
)
@SIDECAR_OPTION
@config_options()
def compare(config_request: ConfigRequest, gossip: str, sidecar: str | None) -> None:
    """Shadow mode: read the gossip layer's /status and ringside's, print every difference
    (leader, live and dead peers, voter quorum). Exits 0 when they agree, 1 when they differ,
    3 when either does not answer."""
    from sidecar.cli.tables import safe  # noqa: PLC0415

    ours_url = sidecar or client_for(config_request, None).base_url
    found = differences(_status(gossip, "the gossip layer"), _status(ours_url, "the sidecar"))
    for line in found:
        click.echo(safe(line))
    if found:
        raise SystemExit(EXIT_DEGRADED)
    click.echo("gossip and ringside agree: the same leader, live and dead peers, and quorum")
