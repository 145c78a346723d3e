"""Chaos campaigns (`make chaos`): seeded rounds of faults on real sidecars and a real etcd,
under an invariant checker that polls every sidecar every 50 ms.

  plan.py      the seeded plan: fault kinds, targets by role, holds
  testbed.py   3 etcd members, 5 sidecars, one partition route per sidecar
  faults.py    doing and healing each fault; the supervisor (sidecars exiting on their own)
  probe.py     HTTP to the sidecars, every status code seen (5xx, non-JSON)
  pollers.py   one polling task per sidecar
  claims.py    the safety checks on leadership claims
  converge.py  convergence after a heal (liveness)
  findings.py  every check failure with round, seed, faults and time
  campaign.py  the rounds; report.py the JSON, the summary, the docs section
"""
