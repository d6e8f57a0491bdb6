#!/usr/bin/env bash
# Make sure a Docker engine answers. Idempotent: a running engine is left alone.
# Order: $DOCKER_HOST if set; else the local socket; else (Debian, root) install
# docker.io and start dockerd in the background, clearing a stale pid file.
set -euo pipefail

log=${CLAUDE_LAB_DOCKERD_LOG:-/var/log/claude-lab-dockerd.log}
deadline=${CLAUDE_LAB_ENGINE_WAIT:-60}

say() { printf 'engine: %s\n' "$*"; }

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if [ -n "${DOCKER_HOST:-}" ]; then
  if answers; then say "DOCKER_HOST=$DOCKER_HOST answers"; exit 0; fi
  say "DOCKER_HOST=$DOCKER_HOST does not answer; fix it or unset DOCKER_HOST to use a local engine" >&2
  exit 1
fi

if command -v docker >/dev/null 2>&1 && answers; then
  say "local engine answers (server $(docker version --format '{{.Server.Version}}'))"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "no Docker engine and cannot install one here (needs root and apt-get)." >&2
    say "install Docker (https://docs.docker.com/engine/install/) or set DOCKER_HOST" >&2
    exit 1
  fi
  say "installing docker.io with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi
# The docker.io package brings its own client; an older client on PATH also works.

if [ "$(id -u)" != 0 ]; then
  say "dockerd is installed but not running; start it (sudo dockerd &) or set DOCKER_HOST" >&2
  exit 1
fi

# Alive means running: a killed dockerd can linger as a zombie that kill -0 and pgrep still see.
alive() { [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
running_dockerd() { for p in $(pgrep -x dockerd 2>/dev/null); do alive "$p" && return 0; done; return 1; }

pidfile=/var/run/docker.pid
if [ -f "$pidfile" ]; then
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if alive "$pid"; then
    say "dockerd (pid $pid) is running but does not answer yet; waiting"
  else
    say "removing stale $pidfile (pid ${pid:-?} is gone)"
    rm -f "$pidfile"
  fi
fi
if ! running_dockerd; then
  # A stale containerd pid/socket from a killed session would also block start-up.
  rm -f /var/run/docker/containerd/containerd.pid 2>/dev/null || true
  say "starting dockerd in the background (log: $log)"
  nohup dockerd >>"$log" 2>&1 &
fi

end=$((SECONDS + deadline))
until answers; do
  if [ $SECONDS -ge $end ]; then
    say "dockerd did not answer within ${deadline}s; see $log:" >&2
    tail -n 20 "$log" >&2 || true
    exit 1
  fi
  sleep 0.5
done
say "local engine answers (server $(docker version --format '{{.Server.Version}}'); log: $log)"
