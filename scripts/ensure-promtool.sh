#!/usr/bin/env bash
# Make sure `promtool` is available for the tests (tests/test_prometheus.py): uses the one on
# PATH, else installs Debian's `prometheus` package (which carries it) with apt-get, as root or
# through sudo; otherwise says what to install and fails.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else sudo=(); fi
  if [ "$(id -u)" -eq 0 ] || [ ${#sudo[@]} -gt 0 ]; then
    echo "ensure-promtool: promtool not found; installing Debian's prometheus package" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    # The package may start a Prometheus server on :9090; the tests need only promtool.
    "${sudo[@]}" sh -c 'command -v invoke-rc.d >/dev/null && invoke-rc.d prometheus stop >/dev/null 2>&1' || true
    if command -v promtool >/dev/null 2>&1; then exit 0; fi
  fi
fi

cat >&2 <<'MSG'
ensure-promtool: promtool not found, and it could not be installed automatically.
Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install prometheus
  any Linux:      the prometheus release tarball from prometheus.io carries promtool
  macOS:          brew install prometheus
MSG
exit 1
