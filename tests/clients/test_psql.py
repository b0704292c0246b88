"""The real psql binary against Weir.

psql sends an SSLRequest first (sslmode=prefer), every statement as a simple Query, and turns
backslash commands into catalog queries chosen by the server_version the server reports: `\\dt`
(pg_class/pg_namespace/pg_am, pg_table_is_visible), `\\d t` (about nine queries: regex match with
OPERATOR(pg_catalog.~) ... COLLATE pg_catalog.default, pg_attribute with format_type, pg_policy,
pg_statistic_ext, pg_publication*, pg_inherits, pg_index with pg_get_indexdef), `\\l`
(pg_database incl. datlocprovider/daticulocale in psql 15).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

PSQL = shutil.which("psql")
pytestmark = pytest.mark.skipif(PSQL is None, reason="psql not installed (tests/clients/setup.sh installs it)")


def psql(weir, *args: str, stdin: str | None = None, on_error_stop: bool = False) -> subprocess.CompletedProcess:
    cmd = [
        PSQL, "-h", weir.host, "-p", str(weir.port), "-U", "weir", "-d", "weir", "-X",
        "-v", f"ON_ERROR_STOP={1 if on_error_stop else 0}", *args,
    ]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PG")  # no stray PGHOST, PGPASSWORD...
    }
    env.update({"PGSSLMODE": "prefer", "PGCONNECT_TIMEOUT": "10", "PAGER": "", "PSQL_PAGER": "",
                "LC_ALL": "C.UTF-8", "PGCLIENTENCODING": "UTF8"})
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env, timeout=60)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"psql exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "ERROR" not in proc.stderr, proc.stderr
    return proc.stdout


def header(output: str) -> list[str]:
    """Column titles of psql's aligned output (the line above the ----+---- separator)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if i > 0 and re.match(r"^-+(\+-+)*$", line.strip()):
            return [c.strip() for c in lines[i - 1].split("|")]
    return []


def table_rows(output: str, ncols: int) -> list[list[str]]:
    """Data rows of psql's aligned output (header and separator skipped)."""
    rows = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^-+(\+-+)*$", line.strip()):
            for data in lines[i + 1:]:
                if not data.strip() or data.startswith("("):
                    break
                cells = [c.strip() for c in data.split("|")]
                if len(cells) == ncols:
                    rows.append(cells)
            break
    return rows


@pytest.fixture
def table(weir, unique_name):
    t = unique_name("t_psql")
    assert ok(psql(weir, "-c",
                   f"CREATE TABLE {t} (id int PRIMARY KEY, name text, amount double precision, ts timestamptz, "
                   f"big bigint, small smallint, price numeric(10,2), label varchar(20), ok boolean, "
                   f"d date, tsn timestamp, r real)")).strip() == "CREATE TABLE"
    out = ok(psql(weir, "-c",
                  f"INSERT INTO {t} (id, name, amount, ts) VALUES (1, 'one', 1.5, '2026-11-23 10:00:00+00'), "
                  f"(2, 'two', -2.25, '2026-11-23 10:01:00+00'), (3, NULL, 0, NULL)"))
    assert out.strip() == "INSERT 0 3"
    yield t
    psql(weir, "-c", f"DROP TABLE IF EXISTS {t}")


def test_dt_lists_the_table(weir, table):
    out = ok(psql(weir, "-c", r"\dt"))
    assert "List of relations" in out
    rows = table_rows(out, 4)
    assert rows, out
    assert header(out) == ["Schema", "Name", "Type", "Owner"], out
    mine = [r for r in rows if r[1] == table]
    assert len(mine) == 1, out
    assert mine[0][0] == "public" and mine[0][2] == "table" and mine[0][3], out
    assert all(r[0] not in ("pg_catalog", "information_schema") for r in rows)


def test_d_shows_columns(weir, table):
    out = ok(psql(weir, "-c", rf"\d {table}"))
    assert f'Table "public.{table}"' in out, out
    assert header(out) == ["Column", "Type", "Collation", "Nullable", "Default"], out
    assert table_rows(out, 5) == [
        ["id", "integer", "", "not null", ""],
        ["name", "text", "", "", ""],
        ["amount", "double precision", "", "", ""],
        ["ts", "timestamp with time zone", "", "", ""],
        ["big", "bigint", "", "", ""],
        ["small", "smallint", "", "", ""],
        ["price", "numeric(10,2)", "", "", ""],
        ["label", "character varying(20)", "", "", ""],
        ["ok", "boolean", "", "", ""],
        ["d", "date", "", "", ""],
        ["tsn", "timestamp without time zone", "", "", ""],
        ["r", "real", "", "", ""],
    ], out


def test_d_shows_primary_key_index(weir, table):
    out = ok(psql(weir, "-c", rf"\d {table}"))
    assert "Indexes:" in out, out
    assert f'"{table}_pkey" PRIMARY KEY, btree (id)' in out, out


def test_l_lists_the_database(weir):
    out = ok(psql(weir, "-c", r"\l"))
    assert "List of databases" in out
    assert header(out)[:3] == ["Name", "Owner", "Encoding"], out
    names = [r[0] for r in table_rows(out, 8) if r[0]]
    assert "weir" in names, out


def test_query_values(weir, table):
    # Unaligned, tuples only: exact text of each value.
    out = ok(psql(weir, "-A", "-t", "-F", ",", "-q",
                  "-c", "SET TIME ZONE 'UTC'",
                  "-c", f"SELECT id, name, amount, ts FROM {table} ORDER BY id"))
    assert out.splitlines() == [
        "1,one,1.5,2026-11-23 10:00:00+00",
        "2,two,-2.25,2026-11-23 10:01:00+00",
        "3,,0,",
    ]
    # Aligned, as a person sees it, with the row-count footer.
    out = ok(psql(weir, "-c", f"SELECT count(*) AS n, sum(amount) AS total FROM {table}"))
    assert [line.rstrip() for line in out.strip("\n").splitlines()] == [
        " n | total",
        "---+-------",
        " 3 | -0.75",
        "(1 row)",
    ]
    # A statement read from stdin, with parameters substituted by psql itself.
    out = ok(psql(weir, "-A", "-t", "-v", "wanted=2",
                  stdin=f"SELECT name FROM {table} WHERE id = :wanted;\n"))
    assert out.strip() == "two"


def test_error_statements(weir, unique_name):
    missing = unique_name("t_psql_missing")
    verbose = ["-v", "VERBOSITY=verbose"]  # "ERROR:  <SQLSTATE>: <message>"

    proc = psql(weir, *verbose, "-c", f"SELECT * FROM {missing}")
    assert proc.returncode != 0
    assert re.search(rf'^ERROR:  42P01: relation "{missing}" does not exist', proc.stderr, re.M), proc.stderr

    proc = psql(weir, *verbose, "-c", "SELECT 1/0")
    assert proc.returncode != 0
    assert re.search(r"^ERROR:  22012: division by zero", proc.stderr, re.M), proc.stderr

    proc = psql(weir, *verbose, "-c", "SELEC 1")
    assert proc.returncode != 0
    assert re.search(r'^ERROR:  42601: syntax error at or near "SELEC"', proc.stderr, re.M), proc.stderr

    script = f"SELECT * FROM {missing};\nSELECT 'after the error' AS msg;\n"
    # ON_ERROR_STOP=0: the error is printed and the script goes on; exit code 0.
    proc = psql(weir, "-A", "-t", stdin=script, on_error_stop=False)
    assert "ERROR:" in proc.stderr and missing in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "after the error"
    assert proc.returncode == 0
    # ON_ERROR_STOP=1: psql stops at the error and exits 3.
    proc = psql(weir, "-A", "-t", stdin=script, on_error_stop=True)
    assert "ERROR:" in proc.stderr and missing in proc.stderr, proc.stderr
    assert "after the error" not in proc.stdout
    assert proc.returncode == 3, (proc.returncode, proc.stderr)


def test_other_describe_commands(weir):
    # \l lists only the database Weir serves (one can connect to every name it shows).
    out = ok(psql(weir, "-c", r"\l"))
    names = [r[0] for r in table_rows(out, 8)]
    assert names == ["weir"], out
    # \dn shows the user schema and weir_catalog; \dv and \df run (nothing to list yet).
    out = ok(psql(weir, "-c", r"\dn"))
    # weir_catalog holds Weir's system tables (sources, materialized_views).
    assert [r[0] for r in table_rows(out, 2)] == ["public", "weir_catalog"], out
    for cmd in (r"\dv", r"\df", r"\di"):
        proc = psql(weir, "-c", cmd)
        assert proc.returncode == 0 and "ERROR" not in proc.stderr, (cmd, proc.stderr)


def test_dm_lists_materialized_views(weir, table, unique_name):
    view = unique_name("mv_psql")
    ok(psql(weir, "-c", f"CREATE MATERIALIZED VIEW {view} AS SELECT count(*) AS n FROM {table}", on_error_stop=True))
    out = ok(psql(weir, "-c", r"\dm"))
    mine = [r for r in table_rows(out, 4) if r[1] == view]
    assert mine and mine[0][2] == "materialized view", out
    described = ok(psql(weir, "-c", rf"\d {view}"))
    assert f'Materialized view "public.{view}"' in described, described
    ok(psql(weir, "-c", f"DROP MATERIALIZED VIEW {view}", on_error_stop=True))
