"""SUBSCRIBE through real clients: `COPY (SUBSCRIBE ...) TO STDOUT` in psql (ended by
statement_timeout, as a script would bound it) and in psycopg 3 (`cursor.copy()`, rows read as
they come while another connection writes). Weir-only: Postgres has no SUBSCRIBE."""

from __future__ import annotations

import os
import threading
import time

import psycopg
import pytest

from test_psql import PSQL, psql

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("WEIR_TEST_EXTERNAL_PG")), reason="SUBSCRIBE is Weir's (Materialize's), not Postgres's"
)


def setup_view(weir, name: str) -> None:
    with psycopg.connect(weir.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name}_t (id INT PRIMARY KEY, k TEXT, v BIGINT)")
        conn.execute(f"CREATE MATERIALIZED VIEW {name} AS SELECT k, sum(v) AS s FROM {name}_t GROUP BY k")
        conn.execute(f"INSERT INTO {name}_t VALUES (1, 'a', 10), (2, 'b', 5)")
        conn.execute("FLUSH")


def fold(rows: list[list[str]]) -> dict[tuple[str, ...], int]:
    """weir_epoch, weir_diff, weir_progressed, columns... -> multiplicity per row."""
    state: dict[tuple[str, ...], int] = {}
    for row in rows:
        if row[2] == "t":
            continue
        key = tuple(row[3:])
        state[key] = state.get(key, 0) + int(row[1])
        if state[key] == 0:
            del state[key]
    return state


@pytest.mark.skipif(PSQL is None, reason="psql not installed")
def test_psql_copy_subscribe_streams_until_the_statement_timeout(weir, unique_name):
    name = unique_name("sub")
    setup_view(weir, name)

    def write_later():
        time.sleep(1.0)
        with psycopg.connect(weir.conninfo(), autocommit=True) as conn:
            conn.execute(f"INSERT INTO {name}_t VALUES (3, 'a', 1)")
            conn.execute(f"UPDATE {name}_t SET v = 7 WHERE id = 2")

    writer = threading.Thread(target=write_later)
    writer.start()
    proc = psql(weir, "-q", "-c", "SET statement_timeout = 3000",
                "-c", f"COPY (SUBSCRIBE {name} WITH (progress = true)) TO STDOUT")
    writer.join()
    assert "canceling statement due to statement timeout" in proc.stderr, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    epochs = [int(r[0]) for r in rows]
    assert epochs == sorted(epochs), "rows in epoch order"
    assert any(r[2] == "t" for r in rows), "progress rows"
    assert fold(rows) == {("a", "11"): 1, ("b", "7"): 1}, rows


def test_psycopg_copy_subscribe_reads_rows_as_they_come(weir, unique_name):
    name = unique_name("sub")
    setup_view(weir, name)
    seen: list[list[str]] = []
    with psycopg.connect(weir.conninfo(), autocommit=True) as reader, \
            psycopg.connect(weir.conninfo(), autocommit=True) as writer:
        with reader.cursor() as cur:
            with pytest.raises(psycopg.errors.QueryCanceled):
                with cur.copy(f"COPY (SUBSCRIBE {name}) TO STDOUT") as copy:
                    for row in copy.rows():
                        seen.append(list(row))
                        if len(seen) == 2:
                            # The snapshot arrived; now a change, seen while the COPY runs.
                            writer.execute(f"DELETE FROM {name}_t WHERE id = 1")
                        if len(seen) == 3:
                            reader.cancel()
    # weir_epoch, weir_diff, k, s: the snapshot (a 10, b 5), then a's row retracted.
    assert sorted((r[1], r[2], r[3]) for r in seen[:2]) == [("1", "a", "10"), ("1", "b", "5")]
    assert (seen[2][1], seen[2][2], seen[2][3]) == ("-1", "a", "10")
    assert int(seen[2][0]) > int(seen[0][0]), "the delete is of a later epoch"


def test_psycopg_declare_cursor_for_subscribe_and_fetch(weir, unique_name):
    """Materialize's cursor interface: DECLARE in a transaction block, FETCH waits for rows,
    FETCH ... WITH (timeout) may return none."""
    name = unique_name("cur")
    setup_view(weir, name)
    with psycopg.connect(weir.conninfo()) as conn, psycopg.connect(weir.conninfo(), autocommit=True) as writer:
        cur = conn.cursor()
        cur.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {name}")
        cur.execute("FETCH ALL c")
        snapshot = cur.fetchall()
        assert [d.name for d in cur.description] == ["weir_epoch", "weir_diff", "k", "s"]
        assert sorted((r[1], r[2], r[3]) for r in snapshot) == [(1, "a", 10), (1, "b", 5)]
        started = time.monotonic()
        cur.execute("FETCH ALL c WITH (timeout = '500ms')")
        assert cur.fetchall() == [], "nothing changed"
        assert time.monotonic() - started >= 0.4, "FETCH waited for the timeout"
        writer.execute(f"UPDATE {name}_t SET v = 20 WHERE id = 1")
        changes = []
        while len(changes) < 2:
            cur.execute("FETCH 10 c")  # waits for the update
            changes += cur.fetchall()
        assert sorted((r[1], r[2], r[3]) for r in changes) == [(-1, "a", 10), (1, "a", 20)]
        assert changes[0][0] > snapshot[0][0], "a later epoch"
        cur.execute("CLOSE c")
        with pytest.raises(psycopg.errors.InvalidCursorName):
            cur.execute("FETCH 1 c")
        conn.rollback()
    with psycopg.connect(weir.conninfo(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.NoActiveSqlTransaction):
            conn.execute(f"DECLARE c CURSOR FOR SUBSCRIBE {name}")
