#!/usr/bin/env bash
# Makes sure a redis-server binary of version 7 or later exists (tests start their own on free ports); installs
# Debian's package if there is none. Exits non-zero, with the reason, when it cannot.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  command -v redis-server >/dev/null 2>&1 || { echo "could not install redis-server" >&2; exit 1; }
fi
# The engine's scripts need Redis 7 (docs/operations.md); an older server would fail the tests for no reason of ours.
version=$(redis-server --version | sed -E 's/.*v=([0-9]+)\..*/\1/')
if [ "$version" -lt 7 ]; then
  echo "redis-server $(redis-server --version | sed -E 's/.*v=([0-9.]+).*/\1/') is too old: Redis 7 or later is needed" >&2
  exit 1
fi
