#!/usr/bin/env bash
# Installs what tests/clients needs: a Python venv with the pinned client libraries, psql and
# pgJDBC from Debian. Idempotent and quiet: run it before every test run (CI does).
#
#   WEIR_VENV   venv location (default: $HOME/.cache/weir-venv)
#
# Afterwards: "$WEIR_VENV/bin/python" -m pytest tests/clients
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${WEIR_VENV:-$HOME/.cache/weir-venv}"
req="$here/requirements.txt"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# --- Debian packages: psql and the PostgreSQL JDBC driver (+ a JDK to run JdbcTest.java) ----
missing=()
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v java >/dev/null 2>&1 || missing+=(default-jdk-headless)
if [ "${#missing[@]}" -gt 0 ]; then
    # Update the package lists only when the install cannot be resolved from the current ones.
    if ! $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        $sudo apt-get update -qq >/dev/null
        $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# --- Python venv --------------------------------------------------------------------------------
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
        # Debian's system python needs python3-venv for ensurepip.
        rm -rf "$venv"
        $sudo apt-get install -y -qq python3-venv >/dev/null 2>&1 \
            || { $sudo apt-get update -qq >/dev/null; $sudo apt-get install -y -qq python3-venv >/dev/null; }
        "$python" -m venv "$venv"
    fi
fi
# Reinstall only when requirements.txt changed since the last successful install.
stamp="$venv/.weir-clients-requirements"
if ! cmp -s "$req" "$stamp" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
fi

echo "tests/clients: venv ready at $venv"
