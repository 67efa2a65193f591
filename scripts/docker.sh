#!/usr/bin/env bash
# Makes a Docker engine answer on this machine: installs Debian's docker.io
# when dockerd is missing, starts dockerd as root in the background when it is
# not running (its log in $DOCKERD_LOG), and waits until `docker info` answers.
# Idempotent: an engine that already answers is left alone. No image registry
# is reachable from here; scripts/image.sh builds the images locally.
# On failure it says why and exits non-zero (the container test suites then
# skip, naming the reason). Usage: scripts/docker.sh
set -euo pipefail

log=${DOCKERD_LOG:-/var/log/stowage-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}

fail() { echo "docker.sh: $*" >&2; exit 1; }
said=
# Whether `docker info` answers; if not, its last line of complaint goes to $said.
answers() {
  local out
  if out=$(docker info 2>&1 >/dev/null); then return 0; fi
  said=$(printf '%s\n' "$out" | grep -v '^$' | tail -n 1)
  return 1
}

if command -v docker >/dev/null 2>&1 && answers; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker.sh: installing Debian's docker.io" >&2
  $sudo apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker.io >/dev/null || fail "apt-get install docker.io failed"
fi
command -v docker >/dev/null 2>&1 || fail "no docker client after installing docker.io"

# Started only when no dockerd runs; one that runs but does not answer yet is waited for.
running() { pgrep -x dockerd >/dev/null 2>&1; }
if ! running; then
  echo "docker.sh: starting dockerd (log: $log)" >&2
  $sudo mkdir -p "$(dirname "$log")"
  # setsid -f: dockerd outlives this script and the shell that ran it.
  $sudo setsid -f dockerd >>"$log" 2>&1 </dev/null
fi

for ((i = 0; i < wait_s * 4; i++)); do
  if answers; then
    echo "docker.sh: engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers" >&2
    exit 0
  fi
  # A second to appear in the process list before its absence means it exited.
  if [ "$i" -ge 4 ] && ! running; then
    fail "dockerd exited; the end of $log: $(tail -n 5 "$log" 2>/dev/null | tr '\n' ' ')"
  fi
  sleep 0.25
done
fail "docker info does not answer after ${wait_s}s (${said:-no message}); the end of $log: $(tail -n 5 "$log" 2>/dev/null | tr '\n' ' ')"
