#!/usr/bin/env bash
# Make sure a Docker daemon answers, for `make test-compose`.
#
# Installs what is missing (Debian's docker.io, docker-compose and debootstrap; `apt-get
# update` only then), and if `docker info` fails, starts dockerd in the background with its
# log and pidfile under $RINGSIDE_DOCKERD_DIR (default /var/run/ringside-dockerd), then waits
# for it. A daemon that already answers is left exactly as it is; one this script started is
# left running. Safe to run any number of times. Needs root (or sudo) for installing and
# starting the daemon.
set -euo pipefail

state_dir=${RINGSIDE_DOCKERD_DIR:-/var/run/ringside-dockerd}
deadline_s=${RINGSIDE_DOCKERD_WAIT_S:-60}

say() { echo "docker-up: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  # The package's own service is not wanted here (and there is often no init to start it):
  # policy-rc.d exit 101 tells the maintainer scripts not to start anything.
  policy=/usr/sbin/policy-rc.d
  added_policy=no
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    added_policy=yes
  fi
  status=0
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" iptables >/dev/null || status=$?
  if [ "$added_policy" = yes ]; then "${sudo[@]}" rm -f "$policy"; fi
  [ "$status" -eq 0 ] || { say "apt-get install failed ($status)"; exit "$status"; }
fi

if "${sudo[@]}" docker info >/dev/null 2>&1; then
  exit 0
fi

"${sudo[@]}" mkdir -p "$state_dir"
pidfile=$state_dir/dockerd.pid
log=$state_dir/dockerd.log
if [ -s "$pidfile" ] && "${sudo[@]}" kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  say "dockerd (pid $(cat "$pidfile")) is starting; waiting for it"
else
  say "starting dockerd (log $log)"
  # setsid + nohup: the daemon outlives this script and the make that ran it. Its own
  # --pidfile (the default /var/run/docker.pid) is the one dockerd checks for a second copy.
  "${sudo[@]}" setsid nohup dockerd >>"$log" 2>&1 </dev/null &
  echo $! | "${sudo[@]}" tee "$pidfile" >/dev/null
fi

deadline=$((SECONDS + deadline_s))
until "${sudo[@]}" docker info >/dev/null 2>&1; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "dockerd did not answer within ${deadline_s} s; last lines of $log:"
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  if ! "${sudo[@]}" kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "dockerd exited; last lines of $log:"
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  sleep 0.2
done
say "dockerd $("${sudo[@]}" docker version --format '{{.Server.Version}}' 2>/dev/null) answers (${SECONDS} s)"
