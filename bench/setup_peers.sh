#!/usr/bin/env bash
# Install the peer job queues the benchmark compares against, into bench-only environments (never runtime deps):
# a virtualenv at bench/.venv-peers for the Python ones and bench/node/node_modules for BullMQ on Node.js.
# Each install may fail on its own; `python -m bench` then reports that peer as "unavailable: <reason>".
set -u
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
status=0

if [ ! -x .venv-peers/bin/python ]; then
  "$PYTHON" -m venv .venv-peers || { echo "setup_peers: could not create .venv-peers" >&2; status=1; }
fi
if [ -x .venv-peers/bin/python ]; then
  .venv-peers/bin/python -m pip install --quiet --upgrade pip
  # One resolver run for all, so they share one redis-py; then each alone, so one failure does not block the rest.
  if ! .venv-peers/bin/python -m pip install --quiet bullmq saq taskiq-redis 'dramatiq[redis]' arq redis py-spy; then
    for pkg in redis bullmq saq taskiq-redis 'dramatiq[redis]' arq py-spy; do
      .venv-peers/bin/python -m pip install --quiet "$pkg" || { echo "setup_peers: $pkg failed" >&2; status=1; }
    done
  fi
  # Our engine parses replies with hiredis (a runtime dependency); every Python peer gets the same hiredis, at the
  # version pinned for ours, so the comparison measures queues, not parsers. The report's version column names the
  # parser each system used.
  hiredis_pin=$(grep -i '^hiredis==' ../requirements/constraints.txt || echo hiredis)
  .venv-peers/bin/python -m pip install --quiet "$hiredis_pin" \
    || { echo "setup_peers: $hiredis_pin failed: peers would use the pure-Python parser" >&2; status=1; }
  .venv-peers/bin/python -c 'from redis.utils import HIREDIS_AVAILABLE as h; print("setup_peers: peers parse with", "hiredis" if h else "pure Python")'
fi

if command -v npm >/dev/null 2>&1; then
  (cd node && npm install --silent --no-audit --no-fund) || { echo "setup_peers: npm install failed" >&2; status=1; }
else
  echo "setup_peers: npm not found; BullMQ on Node.js will be reported unavailable" >&2
  status=1
fi
exit "$status"
