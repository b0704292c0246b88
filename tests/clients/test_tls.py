"""TLS with real clients: a server started with ``--tls-self-signed --auth password``, and psql,
psycopg, asyncpg, pgJDBC and ADBC Flight SQL connecting over TLS with SCRAM (or, for Flight,
Basic credentials). Clients that can verify the server do, against the self-signed certificate
(``sslmode=verify-full``); pgJDBC uses ``sslmode=require`` (encrypted, not verified).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import SUPERUSER_PASSWORD, asyncpg_fetchval, run_jdbc_auth


def test_psql_requires_and_verifies_tls(weir_tls):
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed (tests/clients/setup.sh installs it)")
    server, cert = weir_tls
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = SUPERUSER_PASSWORD

    def run(conninfo: str) -> subprocess.CompletedProcess:
        return subprocess.run([psql, conninfo, "-XAtc", "SELECT 6 * 7"], capture_output=True, text=True, env=env, timeout=60)

    base = f"host={server.host} port={server.port} user=weir dbname=weir"
    verified = run(f"{base} sslmode=verify-full sslrootcert={cert}")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.strip() == "42"
    # A client that trusts nothing refuses the self-signed certificate: the check is real.
    untrusted = run(f"{base} sslmode=verify-full sslrootcert=/dev/null")
    assert untrusted.returncode != 0
    # TLS is offered, not forced: a client that does not ask connects in clear (as with a
    # Postgres `host` line).
    plain = run(f"{base} sslmode=disable")
    assert plain.returncode == 0, plain.stderr


def test_psycopg_connects_with_scram_over_tls(weir_tls):
    import psycopg

    server, cert = weir_tls
    conninfo = server.conninfo(password=SUPERUSER_PASSWORD, sslmode="verify-full", sslrootcert=str(cert))
    with psycopg.connect(conninfo) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
    with pytest.raises(psycopg.OperationalError) as err:
        psycopg.connect(server.conninfo(password="wrong", sslmode="require"))
    assert 'password authentication failed for user "weir"' in str(err.value)
    # A success clears the failed login from the address's count.
    psycopg.connect(server.conninfo(password=SUPERUSER_PASSWORD, sslmode="require")).close()


def test_asyncpg_connects_over_tls(weir_tls):
    server, cert = weir_tls
    context = ssl.create_default_context(cafile=str(cert))
    assert asyncpg_fetchval(server, "SELECT 3 * 3", SUPERUSER_PASSWORD, ssl=context) == 9


def test_pgjdbc_connects_with_scram_over_tls(weir_tls):
    server, _ = weir_tls
    proc = run_jdbc_auth(server, "ssl=true&sslmode=require")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok right password" in proc.stdout, proc.stdout


def test_adbc_flight_sql_over_tls(weir_tls):
    import adbc_driver_flightsql.dbapi as flight_sql
    from adbc_driver_flightsql import DatabaseOptions as FlightOptions
    from adbc_driver_manager import DatabaseOptions

    server, cert = weir_tls
    options = {
        DatabaseOptions.USERNAME.value: "weir",
        DatabaseOptions.PASSWORD.value: SUPERUSER_PASSWORD,
        FlightOptions.TLS_ROOT_CERTS.value: Path(cert).read_text(),
    }
    with flight_sql.connect(f"grpc+tls://{server.host}:{server.flight_port}", db_kwargs=options) as conn, conn.cursor() as cur:
        cur.execute("SELECT 5 * 5 AS n")
        assert cur.fetchall() == [(25,)]


def test_tls_required_refuses_clear_text_sessions(tmp_path):
    """``--tls-required`` (Postgres's ``hostssl``): a client that does not negotiate TLS is
    refused with 28000 before any password is asked; one that does connects."""
    import psycopg

    from conftest import _start, _stop

    if os.environ.get("WEIR_TEST_EXTERNAL_PG"):
        pytest.skip("TLS is tested against Weir only")
    running, server = _start(tmp_path, ("--tls-self-signed", "--tls-required"))
    try:
        cert = tmp_path / "data" / "tls" / "self-signed.crt"
        base = f"host={server.host} port={server.port} user=weir dbname=weir"
        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(f"{base} sslmode=disable", connect_timeout=10)
        assert "no encryption" in str(refused.value), refused.value
        with psycopg.connect(f"{base} sslmode=verify-full sslrootcert={cert}", connect_timeout=10) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT 6 * 7").fetchone() == (42,)
    finally:
        _stop(running)
