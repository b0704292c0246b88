#!/usr/bin/env bash
# Replays tests/slt/*.slt on a real PostgreSQL 15 (Debian's postgresql-15), so that the expected
# values those files hold stay Postgres's, not Weir's. Installs the server if missing, runs a
# throw-away cluster on a free port as the `postgres` OS user, stops it afterwards.
#
#   WEIR_VENV   the Python venv with psycopg (tests/clients/setup.sh makes it)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${WEIR_VENV:-$HOME/.cache/weir-venv}"
bin=/usr/lib/postgresql/15/bin
export DEBIAN_FRONTEND=noninteractive
if [ ! -x "$bin/postgres" ]; then
    if ! apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
    fi
fi

dir="$(mktemp -d /tmp/weir-slt-pg.XXXXXX)"
chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    su postgres -c "$bin/pg_ctl -D '$dir/data' -m immediate stop" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
su postgres -c "$bin/initdb -D '$dir/data' -U postgres --auth=trust" >/dev/null
su postgres -c "$bin/pg_ctl -D '$dir/data' -o '-p $port -k $dir -c listen_addresses=' -l '$dir/log' -w start" >/dev/null
"$venv/bin/python" "$here/check_against_postgres.py" "host=$dir port=$port user=postgres dbname=postgres" --fresh-db
