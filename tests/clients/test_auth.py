"""Password authentication with real clients: psql, psycopg, asyncpg, pgJDBC and ADBC Flight SQL
log in to a server started with ``--auth password`` (SCRAM-SHA-256 on the Postgres wire, Basic
credentials in the Flight handshake). The right password gets a session, a wrong one SQLSTATE
28P01, and no password reaches the server's log.

Each test tries a wrong password before the right one: a success clears the address's failed
logins, so the tests never reach the limit (5 failures a minute) that would block 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import SUPERUSER_PASSWORD, asyncpg_fetchval, run_jdbc_auth

WRONG = "not-the-password"


def test_psql_logs_in_with_scram(weir_password):
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed (tests/clients/setup.sh installs it)")
    server, _ = weir_password

    def run(password: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["PGPASSWORD"] = password
        return subprocess.run(
            [psql, "-h", server.host, "-p", str(server.port), "-U", "weir", "-d", "weir", "-XAtc", "SELECT 6 * 7"],
            capture_output=True, text=True, env=env, timeout=60,
        )

    wrong = run(WRONG)
    assert wrong.returncode != 0
    assert 'password authentication failed for user "weir"' in wrong.stderr, wrong.stderr
    right = run(SUPERUSER_PASSWORD)
    assert right.returncode == 0, right.stderr
    assert right.stdout.strip() == "42"


def test_psycopg_logs_in_and_manages_users(weir_password):
    import psycopg

    server, _ = weir_password
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(server.conninfo(password=WRONG))
    assert 'password authentication failed for user "weir"' in str(err.value)
    with psycopg.connect(server.conninfo(password=SUPERUSER_PASSWORD), autocommit=True) as admin:
        admin.execute("DROP USER IF EXISTS carol")
        admin.execute("CREATE USER carol WITH PASSWORD 'carol-pw-1'")
    with psycopg.connect(server.conninfo(user="carol", password="carol-pw-1"), autocommit=True) as carol:
        assert carol.execute("SELECT 2 + 3").fetchone() == (5,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            carol.execute("CREATE USER dave")
    with psycopg.connect(server.conninfo(password=SUPERUSER_PASSWORD), autocommit=True) as admin:
        admin.execute("DROP USER carol")


def test_asyncpg_logs_in_with_scram(weir_password):
    import asyncpg

    server, _ = weir_password
    with pytest.raises(asyncpg.exceptions.InvalidPasswordError):
        asyncpg_fetchval(server, "SELECT 1", WRONG, ssl=False)
    assert asyncpg_fetchval(server, "SELECT 10 * 10", SUPERUSER_PASSWORD, ssl=False) == 100


def test_pgjdbc_logs_in_with_scram(weir_password):
    server, _ = weir_password
    proc = run_jdbc_auth(server)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok wrong password: 28P01" in proc.stdout and "ok right password" in proc.stdout, proc.stdout


def test_adbc_flight_sql_authenticates_with_a_password(weir_password):
    import adbc_driver_flightsql.dbapi as flight_sql
    from adbc_driver_manager import DatabaseOptions

    server, _ = weir_password

    def connect(password: str):
        return flight_sql.connect(
            server.flight_uri(),
            db_kwargs={DatabaseOptions.USERNAME.value: "weir", DatabaseOptions.PASSWORD.value: password},
        )

    with pytest.raises(Exception) as err:
        with connect(WRONG) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
    assert "28P01" in str(err.value), err.value
    with connect(SUPERUSER_PASSWORD) as conn, conn.cursor() as cur:
        cur.execute("SELECT 7 * 6 AS answer")
        assert cur.fetchall() == [(42,)]


def test_no_password_reaches_the_log(weir_password):
    import psycopg

    server, log = weir_password
    # The statements that carry passwords are logged (at debug) redacted, never as given.
    with psycopg.connect(server.conninfo(password=SUPERUSER_PASSWORD), autocommit=True) as admin:
        admin.execute("CREATE USER erin WITH PASSWORD 'erin-secret-pw'")
        admin.execute("ALTER USER erin PASSWORD 'erin-other-pw'")
        admin.execute("DROP USER erin")
    text = Path(log).read_text(errors="replace")
    assert "CREATE USER erin PASSWORD '***'" in text, "the statement is logged, redacted"
    for secret in (SUPERUSER_PASSWORD, WRONG, "carol-pw-1", "erin-secret-pw", "erin-other-pw"):
        assert secret not in text, f"the server log holds {secret!r}"
