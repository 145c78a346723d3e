#!/usr/bin/env bash
# Tools `make bench` uses beyond the test set-up: wrk (Debian's) for the local API load.
# Installs it with apt-get when missing and possible; otherwise the API figures are skipped
# with a note, and every other figure is still measured.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null \
    || echo "ensure-bench-tools: could not install wrk; API load figures will be skipped" >&2
else
  echo "ensure-bench-tools: wrk not found (apt-get install wrk); API load figures will be skipped" >&2
fi
