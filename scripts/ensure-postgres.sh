#!/usr/bin/env bash
# Makes a PostgreSQL server answer at 127.0.0.1:5432 with trust auth for the local tests and a
# database named "test": starts a stopped cluster, or installs one (as root) on a bare machine.
set -euo pipefail
host=127.0.0.1
port=5432

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-postgres: PostgreSQL is not installed and this user cannot install it" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fresh=1
fi

if ! ready; then
    for version in $(ls /etc/postgresql 2>/dev/null); do
        for cluster in $(ls "/etc/postgresql/$version"); do
            pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
        done
    done
fi

if [ "${fresh:-}" = 1 ]; then
    # A cluster this script installed: let local tests connect over loopback without a password.
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(basename "$(dirname "$(dirname "$hba")")")" main reload
fi

for _ in $(seq 1 30); do ready && break; sleep 1; done
ready || { echo "ensure-postgres: no server answers at $host:$port" >&2; exit 1; }

if ! psql -h "$host" -p "$port" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
    psql -h "$host" -p "$port" -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null
fi
echo "ensure-postgres: PostgreSQL ready at $host:$port (database test)"
