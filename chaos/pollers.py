"""The invariant checker's eyes: one polling task per sidecar, so a sidecar that is slow or
frozen never delays the polls of the others.

Each task asks `/v1/leader` every `interval_s` (50 ms by default) and hands the answer to the
claim checks; every fifth round it also asks `/v1/status` and `/v1/fence` for the epoch the
sidecar just named (a 200 from the fence is a claim too), and now and then the orchestrator's
`/status` and `/v1/members`, so a 5xx anywhere is seen. A sidecar that is stopped (SIGSTOP)
or not running is not asked: it cannot answer, and its silence is not a finding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from chaos.claims import ClaimChecks
from chaos.probe import Prober
from tests.fleet import Sidecar


async def poll_forever(
    sidecars: Mapping[str, Sidecar], prober: Prober, checks: ClaimChecks, interval_s: float
) -> None:
    """Run one poller per sidecar until cancelled."""
    pollers = [_poll(sidecars[name], prober, checks, interval_s) for name in sorted(sidecars)]
    await asyncio.gather(*pollers)


async def _poll(sidecar: Sidecar, prober: Prober, checks: ClaimChecks, interval_s: float) -> None:
    turn = 0
    while True:
        if sidecar.running and not sidecar.paused:
            answer = await prober.request(sidecar, "/v1/leader")
            checks.leader_answer(sidecar.node_id, answer)
            if turn % 5 == 0 and answer.body is not None:
                await prober.request(sidecar, "/v1/status")
                epoch = answer.body.get("epoch")
                if isinstance(epoch, int):
                    fence = await prober.request(sidecar, f"/v1/fence?epoch={epoch}")
                    checks.fence_answer(sidecar.node_id, fence)
            if turn % 40 == 20:
                await prober.request(sidecar, "/status")
                await prober.request(sidecar, "/v1/members")
            turn += 1
        await asyncio.sleep(interval_s)
