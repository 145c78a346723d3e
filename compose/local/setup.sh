#!/usr/bin/env bash
# The files compose/local-cluster.yml needs before its first `up`: TLS material for the three
# etcd members and the sidecars, and the folder where the cluster's one-shot `auth-init`
# service writes each node's etcd password. Run as root (file owners matter: etcd runs as root
# in its container, the sidecars as uid 10001), from anywhere:
#
#   sudo compose/local/setup.sh            # then: docker-compose -f compose/local-cluster.yml up -d
#
# Writes into $RINGSIDE_LOCAL_STATE (default compose/local/state, which git ignores):
#   pki/          everything etcd/gen-tls.sh made (both CAs and their keys: keep them here)
#   etcd1..3/     one member's files only, under the names its config file uses: ca.pem,
#                 peer-ca.pem, server.pem + server-key.pem (client port), peer.pem + peer-key.pem
#   sidecar/      ca.pem and the client certificate (no CN) with its key, owned by uid 10001
#   secrets/      mode 0700, owned by uid 10001: root.password and <node>.password appear here
# Running it again keeps what exists (gen-tls.sh keeps valid certificates).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${RINGSIDE_LOCAL_STATE:-$here/state}
sidecar_uid=10001

[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root (files must belong to uid 0 and $sidecar_uid)" >&2; exit 2; }

mkdir -p "$state"
"$here/../../etcd/gen-tls.sh" --conf-dir "$here" --extra-san DNS:localhost --client ringside \
  "$state/pki" >/dev/null

for n in 1 2 3; do
  member=$state/etcd$n
  install -d -m 0700 -o 0 -g 0 "$member"
  install -m 0644 -o 0 -g 0 "$state/pki/ca.pem" "$state/pki/peer-ca.pem" "$member/"
  install -m 0644 -o 0 -g 0 "$state/pki/etcd$n.pem" "$member/server.pem"
  install -m 0600 -o 0 -g 0 "$state/pki/etcd$n-key.pem" "$member/server-key.pem"
  install -m 0644 -o 0 -g 0 "$state/pki/etcd$n-peer.pem" "$member/peer.pem"
  install -m 0600 -o 0 -g 0 "$state/pki/etcd$n-peer-key.pem" "$member/peer-key.pem"
done

install -d -m 0700 -o "$sidecar_uid" -g "$sidecar_uid" "$state/sidecar" "$state/secrets"
install -m 0644 -o "$sidecar_uid" -g "$sidecar_uid" "$state/pki/ca.pem" \
  "$state/pki/client-ringside.pem" "$state/sidecar/"
install -m 0600 -o "$sidecar_uid" -g "$sidecar_uid" "$state/pki/client-ringside-key.pem" \
  "$state/sidecar/"
echo "setup.sh: ready in $state"
