#!/usr/bin/env bash
# The voters' client URLs, from their config files: the one place they are defined (the
# `advertise-client-urls` of every *.conf.yml beside this script, voter by voter, public IP
# first). Prints them comma-separated, ready for RINGSIDE_ETCD_ENDPOINTS or ETCDCTL_ENDPOINTS.
set -euo pipefail
dir="${1:-$(dirname "$0")}"
urls=()
for conf in "$dir"/*.conf.yml; do
  line="$(sed -n 's/^advertise-client-urls: *//p' "$conf")"
  [ -n "$line" ] || { echo "endpoints.sh: no advertise-client-urls in $conf" >&2; exit 1; }
  urls+=("$line")
done
[ ${#urls[@]} -gt 0 ] || { echo "endpoints.sh: no *.conf.yml in $dir" >&2; exit 1; }
(IFS=,; echo "${urls[*]}")
