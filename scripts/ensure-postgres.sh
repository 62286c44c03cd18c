#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the store tests and prints the URL they should use.
# Order: TEST_DATABASE_URL if set; the machine's server on 127.0.0.1:5432 (started if installed but down);
# else Debian's package is installed and a password is set for the test user.
set -euo pipefail
if [ -n "${TEST_DATABASE_URL:-}" ]; then echo "$TEST_DATABASE_URL"; exit 0; fi
url="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
can_login() { psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; }
if command -v pg_isready >/dev/null 2>&1 && ready && can_login; then echo "$url"; exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL not found: installing Debian's postgresql package" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
if ! ready; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 1 50); do ready && break; sleep 0.2; done
fi
ready || { echo "PostgreSQL did not start" >&2; exit 1; }
if can_login; then echo "$url"; exit 0; fi
# A fresh Debian cluster asks for a password over TCP: give the test user one and a `test` database.
su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='test'\" | grep -q 1 || createdb test" >&2
echo "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/test"
