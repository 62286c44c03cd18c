#!/usr/bin/env bash
# For `make run`: use the Redis in REDIS_URL if it answers, else start a local one (AOF on) under .run/.
set -euo pipefail
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
if redis-cli -u "$url" ping >/dev/null 2>&1; then
  exit 0
fi
case "$url" in
  redis://127.0.0.1:*|redis://localhost:*) ;;
  *) echo "Redis at the configured REDIS_URL does not answer; start it and try again"; exit 1 ;;
esac
port=$(echo "$url" | sed -E 's#redis://[^:]+:([0-9]+).*#\1#')
mkdir -p .run
echo "starting a local redis-server on port $port (data in .run/)"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$PWD/.run" \
  --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
  --logfile "$PWD/.run/redis.log" --pidfile "$PWD/.run/redis.pid"
for _ in $(seq 1 50); do
  redis-cli -u "$url" ping >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "local redis-server did not start; see .run/redis.log"; exit 1
