#!/usr/bin/env bash
# The commands the guides' tests run for real (tests/test_guides.py) that a minimal Debian may
# lack: nft (the voters' firewall rules, applied in a network namespace of the test's own),
# logrotate (the Vast.ai log rotation), curl and openssl. Installs what is missing with
# apt-get, as root or through sudo; otherwise says what to install and fails.
set -euo pipefail

declare -A package=([nft]=nftables [logrotate]=logrotate [curl]=curl [openssl]=openssl [unshare]=util-linux)
missing=()
for command in "${!package[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${package[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else sudo=(); fi
  if [ "$(id -u)" -eq 0 ] || [ ${#sudo[@]} -gt 0 ]; then
    echo "ensure-test-tools: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    exit 0
  fi
fi
echo "ensure-test-tools: install ${missing[*]}, then run the command again" >&2
exit 1
