"""ringside: an etcd-backed coordination sidecar.

One sidecar runs on every node. etcd is the single source of truth; the sidecar keeps the
node's membership lease alive, campaigns for leadership when eligible, and tells the local
orchestrator what etcd decided.
"""

__version__ = "0.2.0"
