#!/usr/bin/env bash
# Everything claude-lab needs on a machine, idempotent: a second run changes nothing and is quick.
#   1. a virtual environment (.venv) with the package and its test extras
#   2. a Docker engine that answers (installs and starts one on Debian if needed)
#   3. the base image (pulled, or built offline with debootstrap)
#   4. extra CA certificates: where the host trusts its own (a TLS-intercepting proxy), the
#      images must too; record that in the per-user config.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
say() { printf 'setup: %s\n' "$*"; }

# 1. venv, reinstalled only when pyproject.toml changed.
stamp="$VENV/.claude-lab-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing claude-lab and its test extras into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
else
  say "$VENV up to date"
fi

# 2. and 3.
scripts/ensure-engine.sh
scripts/ensure-base-image.sh

# git on the host: agents are seeded from the project's repository and their work comes back into it.
if ! command -v git >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing git (agents are seeded from the project's git repository)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq git >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq git >/dev/null; }
  else
    say "git not found: install it to seed agents from your project (source=None works without)"
  fi
fi

# Host clients for the dev services (psql, redis-cli), where apt can bring them.
if ! command -v psql >/dev/null || ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing host clients: postgresql-client redis-tools"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq postgresql-client redis-tools >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq postgresql-client redis-tools >/dev/null; }
  else
    say "psql/redis-cli not found: install them to talk to the dev services from this machine (optional)"
  fi
fi

# The notebook's browser test (tests/test_browser.py): Debian's Chromium, driven by Playwright
# (which cannot download browsers here), a font to render with, and `ip` for its private netns.
if [ ! -x /usr/bin/chromium ] || ! command -v ip >/dev/null || [ ! -e /usr/share/fonts/truetype/dejavu ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing the browser test's chromium, fonts-dejavu-core and iproute2 (large, once)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium fonts-dejavu-core iproute2 >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq chromium fonts-dejavu-core iproute2 >/dev/null; }
  else
    say "chromium not found: tests/test_browser.py will be skipped (install Debian's chromium to run it)"
  fi
fi

# 4. CA certificates.
user_config="${XDG_CONFIG_HOME:-$HOME/.config}/claude-lab/config.toml"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  if [ -f "$user_config" ] && grep -q '^ca_certs' "$user_config"; then
    say "extra CA certificates already configured in $user_config"
  else
    mkdir -p "$(dirname "$user_config")"
    printf '# Written by claude-lab setup: this host trusts extra CAs (a TLS-intercepting proxy),\n# so the lab'"'"'s images must trust them too.\nca_certs = ["/usr/local/share/ca-certificates"]\n' >> "$user_config"
    say "host has extra CA certificates; turned on ca_certs in $user_config"
  fi
fi
say "done"
