#!/usr/bin/env bash
# Makes a PostgreSQL server available for the historian's PostgreSQL tests
# and prints the environment they read, as `export` lines:
#
#   eval "$(scripts/pg-test-env.sh)"
#   cargo test -p gantry-historian --test postgres_backend
#
# Run as root (or through sudo) on Debian/Ubuntu with the `postgresql`
# package installed (`apt-get install -y postgresql`). It starts the first cluster listed by
# pg_lsclusters (creating 15/main or the installed version's main cluster if
# there is none; no systemd needed), makes sure it accepts password logins on
# 127.0.0.1, and creates the role and database `gantry_test` (idempotent).
# Everything but the export lines goes to stderr.
#
#   GANTRY_TEST_PG           connection string for the tests
#   GANTRY_TEST_PG_RESTART   shell command restarting the server (restart test)
#   GANTRY_REQUIRE_PG=1      PostgreSQL tests fail instead of skipping
#
# GANTRY_TEST_PG_PASSWORD overrides the test role's password.
set -euo pipefail

log() { echo "pg-test-env: $*" >&2; }
die() { log "$*"; exit 1; }

ROLE=gantry_test
DB=gantry_test
PASSWORD="${GANTRY_TEST_PG_PASSWORD:-gantry_test_pw}"
case "$PASSWORD" in *"'"*|*" "*) die "GANTRY_TEST_PG_PASSWORD must not contain quotes or spaces";; esac

[ "$(id -u)" -eq 0 ] || die "run me as root (I start the cluster and act as the postgres user)"
command -v pg_lsclusters >/dev/null || die "pg_lsclusters not found: apt-get install -y postgresql"

as_postgres() {
  if command -v runuser >/dev/null; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
}

# The cluster: the first one listed, or a new main cluster of the newest installed version.
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1) || true
if [ -z "${VERSION:-}" ]; then
  VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  [ -n "$VERSION" ] || die "no PostgreSQL server installed under /usr/lib/postgresql"
  log "creating cluster $VERSION/main"
  pg_createcluster "$VERSION" main >&2
  read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1)
fi
CONF_DIR="/etc/postgresql/$VERSION/$CLUSTER"

# Password logins over TCP from 127.0.0.1 (Debian's default, checked anyway).
HBA="$CONF_DIR/pg_hba.conf"
if [ -f "$HBA" ] && ! grep -Eq '^[[:space:]]*host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+(scram-sha-256|md5)' "$HBA"; then
  log "allowing password logins from 127.0.0.1 in $HBA"
  echo "host all all 127.0.0.1/32 scram-sha-256" >>"$HBA"
  [ "$STATUS" = online ] && pg_ctlcluster "$VERSION" "$CLUSTER" reload >&2
fi

if [ "$STATUS" != online ]; then
  log "starting cluster $VERSION/$CLUSTER on port $PORT"
  pg_ctlcluster "$VERSION" "$CLUSTER" start >&2
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$PORT" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PORT" || die "the server does not answer on 127.0.0.1:$PORT (see /var/log/postgresql/)"

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"; }
psql_admin >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE') THEN
    CREATE ROLE $ROLE LOGIN;
  END IF;
END \$\$;
ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
SQL
if [ "$(psql_admin -tA -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" = 0 ]; then
  log "creating database $DB"
  psql_admin -c "CREATE DATABASE $DB OWNER $ROLE" >&2
fi

URL="host=127.0.0.1 port=$PORT user=$ROLE password=$PASSWORD dbname=$DB"
PGPASSWORD="$PASSWORD" psql -X -q -h 127.0.0.1 -p "$PORT" -U "$ROLE" -d "$DB" -tA -c 'SELECT 1' >/dev/null \
  || die "cannot log in as $ROLE on 127.0.0.1:$PORT"
log "PostgreSQL $VERSION/$CLUSTER ready on 127.0.0.1:$PORT (database $DB, role $ROLE)"

# Run through sudo, the tests run as the calling user: they restart through sudo too.
RESTART="pg_ctlcluster $VERSION $CLUSTER restart"
[ -n "${SUDO_USER:-}" ] && RESTART="sudo -n $RESTART"
echo "export GANTRY_TEST_PG='$URL'"
echo "export GANTRY_TEST_PG_RESTART='$RESTART'"
echo "export GANTRY_REQUIRE_PG=1"
