"""The etcd contract (`sidecar.store.base`) and its two implementations: etcd over the v3 JSON
gateway (`sidecar.store.etcd`) and an in-memory store (`sidecar.store.memory`)."""
