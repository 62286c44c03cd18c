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
  # Our engine runs on redis-py's pure-Python parser (hiredis is not one of its dependencies); peers that pull
  # hiredis in (arq's extra) would otherwise get a faster parser and the comparison would measure parsers.
  .venv-peers/bin/python -m pip uninstall --quiet --yes hiredis >/dev/null 2>&1 || true
fi

if command -v npm >/dev/null 2>&1; then
  (cd node && npm install --silent --no-audit --no-fund) || { echo "setup_peers: npm install failed" >&2; status=1; }
else
  echo "setup_peers: npm not found; BullMQ on Node.js will be reported unavailable" >&2
  status=1
fi
exit "$status"
