#!/usr/bin/env bash
# Install (Debian packages) and start a PostgreSQL server for the worker tests,
# listening on loopback only, with a role and a database `bioplaus`.
# Idempotent: safe to run again (skips what is already there).
# Must run as root (CI containers). Prints the line to eval, e.g.
#   export BIOPLAUS_TEST_POSTGRES_URL=postgresql://bioplaus:bioplaus@127.0.0.1:5432/bioplaus
# Use: eval "$(bash .ci/postgres.sh | grep '^export ')"
#
# Environment (optional): PGPORT (default 5432), BIOPLAUS_PG_USER / _PASSWORD / _DB (default bioplaus).
set -euo pipefail

PORT="${PGPORT:-5432}"
PG_USER="${BIOPLAUS_PG_USER:-bioplaus}"
PG_PASSWORD="${BIOPLAUS_PG_PASSWORD:-bioplaus}"
PG_DB="${BIOPLAUS_PG_DB:-bioplaus}"

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs Debian packages and starts a system service)"
    exit 1
fi

# 1. packages --------------------------------------------------------------
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    log "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
else
    log "postgresql already installed"
fi

VER="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"

# 2. cluster ---------------------------------------------------------------
# Some images install the packages without creating the default cluster.
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$VER main"; then
    log "creating cluster $VER/main on port $PORT"
    pg_createcluster "$VER" main --port "$PORT" >/dev/null
fi
PORT="$(pg_lsclusters -h | awk -v v="$VER" '$1 == v && $2 == "main" {print $3}')"

# loopback only, in a drop-in file (postgresql.conf includes conf.d/*.conf); takes
# effect at the next start: restart if the server is running with other addresses
CONF_DIR="/etc/postgresql/$VER/main/conf.d"
mkdir -p "$CONF_DIR"
printf "# written by bioplaus .ci/postgres.sh\nlisten_addresses = '127.0.0.1'\n" > "$CONF_DIR/bioplaus-loopback.conf"
chown postgres:postgres "$CONF_DIR/bioplaus-loopback.conf"
state="$(pg_lsclusters -h | awk -v v="$VER" '$1 == v && $2 == "main" {print $4}')"
if [ "$state" = "online" ]; then
    current="$(su postgres -c "psql -p $PORT -Atqc 'SHOW listen_addresses'" || true)"
    if [ "$current" != "127.0.0.1" ]; then
        log "restarting cluster $VER/main to listen on 127.0.0.1 only"
        pg_ctlcluster "$VER" main restart
    fi
else
    log "starting cluster $VER/main"
    pg_ctlcluster "$VER" main start
fi

# wait until it accepts connections
for _ in $(seq 1 30); do
    if su postgres -c "pg_isready -q -h 127.0.0.1 -p $PORT"; then
        break
    fi
    sleep 1
done
su postgres -c "pg_isready -q -h 127.0.0.1 -p $PORT" || { log "server did not come up"; exit 1; }

# 3. role and database -----------------------------------------------------
psql_admin() { su postgres -c "psql -p $PORT -v ON_ERROR_STOP=1 -Atq $*"; }
if [ "$(psql_admin "-c \"SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'\"")" != "1" ]; then
    log "creating role $PG_USER"
    psql_admin "-c \"CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'\""
else
    psql_admin "-c \"ALTER ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD'\""
fi
if [ "$(psql_admin "-c \"SELECT 1 FROM pg_database WHERE datname = '$PG_DB'\"")" != "1" ]; then
    log "creating database $PG_DB"
    psql_admin "-c \"CREATE DATABASE $PG_DB OWNER $PG_USER\""
fi

URL="postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
# check the URL works with a password over TCP (pg_hba: scram-sha-256 on 127.0.0.1/32)
PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" -Atqc "SELECT 1" >/dev/null
if ! python3 -c "import psycopg2" >/dev/null 2>&1; then
    log "note: the Python driver is missing: pip install psycopg2-binary (or pip install -e '.[test]')"
fi
log "PostgreSQL $VER ready on 127.0.0.1:$PORT"
echo "export BIOPLAUS_TEST_POSTGRES_URL=$URL"
