#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers for the tests and prints the URL they should use (stdout); on failure it
# exits non-zero with the reason on stderr. Order: TEST_DATABASE_URL if set; the machine's server on
# 127.0.0.1:5432 if the `postgres` user can log in to database `test` without a password; else Debian's package is
# installed (if missing), its cluster started, and a role and database of the tests' own created
# (`slack_backend_test`), leaving the `postgres` superuser untouched.
set -euo pipefail
if [ -n "${TEST_DATABASE_URL:-}" ]; then echo "$TEST_DATABASE_URL"; exit 0; fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
ROLE=slack_backend_test
ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
can_login() { PGPASSWORD="${2:-}" psql -w -h 127.0.0.1 -U "$1" -d "${3:-test}" -c 'select 1' >/dev/null 2>&1; }
if command -v pg_isready >/dev/null 2>&1 && ready && can_login postgres; then
  echo "postgresql+asyncpg://postgres@127.0.0.1:5432/test"; exit 0
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "PostgreSQL not found: installing Debian's postgresql package" >&2
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql; } >&2 \
    || { echo "could not install Debian's postgresql package" >&2; exit 1; }
fi
if ! ready; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version" >&2
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 1 50); do ready && break; sleep 0.2; done
fi
ready || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
if ! can_login "$ROLE" "$ROLE" "$ROLE"; then
  as_postgres() { $SUDO -u postgres "$@"; }
  if [ "$(id -u)" = "0" ]; then as_postgres() { su postgres -c "$(printf '%q ' "$@")"; }; fi
  as_postgres psql -q -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='$ROLE') THEN
    CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE'; END IF; END\$\$" >&2
  as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname='$ROLE'" | grep -q 1 \
    || as_postgres createdb -O "$ROLE" "$ROLE" >&2
  can_login "$ROLE" "$ROLE" "$ROLE" || { echo "cannot log in to PostgreSQL as $ROLE" >&2; exit 1; }
fi
echo "postgresql+asyncpg://$ROLE:$ROLE@127.0.0.1:5432/$ROLE"
