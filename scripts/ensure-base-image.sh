#!/usr/bin/env bash
# Make sure the base image (debian:bookworm-slim) exists on the engine.
# Pull it where a registry answers; else build it offline with debootstrap
# (minbase variant) and `docker import` it under the same tag, so every
# Dockerfile keeps a standard FROM line.
set -euo pipefail
image=${CLAUDE_LAB_BASE_IMAGE:-debian:bookworm-slim}
suite=${CLAUDE_LAB_BASE_SUITE:-bookworm}
mirror=${CLAUDE_LAB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { printf 'base image: %s\n' "$*"; }

if docker image inspect "$image" >/dev/null 2>&1; then
  say "$image present"; exit 0
fi
say "pulling $image"
if timeout 120 docker pull -q "$image" >/dev/null 2>&1; then
  say "pulled $image"; exit 0
fi
say "pull failed (no registry reachable); building $image offline with debootstrap"
if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  else
    say "debootstrap is missing: install it (apt-get install debootstrap) or make $image available" >&2
    exit 1
  fi
fi
dir=$(mktemp -d /tmp/claude-lab-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 || {
  say "debootstrap failed; last lines of $dir.log:" >&2; tail -n 20 "$dir.log" >&2; exit 1; }
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" -c . | docker import -c 'CMD ["bash"]' - "$image" >/dev/null
rm -f "$dir.log"
say "built $image offline ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
