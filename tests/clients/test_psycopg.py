"""psycopg 3 and psycopg2 against Weir.

psycopg 3 sends `%s` parameters with the extended protocol (Parse/Bind/Describe/Execute): small
Python ints as int2, str as type 0 (unknown: the server infers it), Decimal as numeric text, aware
datetimes as binary timestamptz. `binary=True` asks for binary results. `executemany` pipelines
several Bind/Execute under one Sync. psycopg2 interpolates parameters client-side and sends simple
queries, wrapped in BEGIN/COMMIT.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import psycopg2
import psycopg2.extensions
import pytest
from psycopg import pq
from psycopg.types import TypeInfo

UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))

COLUMNS = "id, big, small, price, name, ok, ts, d, f, r, v, tsn"
DDL = """CREATE TABLE {t} (
    id int PRIMARY KEY,
    big bigint,
    small smallint,
    price numeric(12,4),
    name text,
    ok boolean,
    ts timestamptz,
    d date,
    f double precision,
    r real,
    v varchar(20),
    tsn timestamp
)"""
# Type OIDs a real PostgreSQL reports in RowDescription for the columns above.
OIDS = [23, 20, 21, 1700, 25, 16, 1184, 1082, 701, 700, 1043, 1114]

ROWS = [
    (1, 5_000_000_000, -32768, Decimal("12345.6789"), "alpha éß☃", True,
     dt.datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC), dt.date(2026, 11, 23),
     0.1, 1.5, "v-1", dt.datetime(2026, 11, 23, 8, 0, 0, 123456)),
    # timestamptz given at +02:00: the same instant as 1999-12-31 21:59:59Z.
    (2, -9_007_199_254_740_993, 7, Decimal("-0.0001"), 'it\'s "quoted"\\', False,
     dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=PLUS2), dt.date(1970, 1, 1),
     -2.5e-300, -0.25, "", dt.datetime(1999, 12, 31, 23, 59, 59)),
    (3, 0, 32767, Decimal("0"), "", True,
     dt.datetime(2000, 1, 1, tzinfo=UTC), dt.date(2000, 2, 29),
     1e300, 0.0, "x" * 20, dt.datetime(2000, 1, 1)),
    (4, None, None, None, None, None, None, None, None, None, None, None),
]


def connect(weir, **kw) -> psycopg.Connection:
    kw.setdefault("autocommit", True)
    return psycopg.connect(weir.conninfo(), **kw)


def insert_sql(t: str) -> str:
    return f"INSERT INTO {t} ({COLUMNS}) VALUES ({', '.join(['%s'] * len(OIDS))})"


@pytest.fixture
def filled(weir, unique_name):
    """A table holding ROWS, inserted one execute() per row (extended protocol)."""
    t = unique_name("t_psycopg3")
    with connect(weir) as conn:
        conn.execute(DDL.format(t=t))
        with conn.cursor() as cur:
            for row in ROWS:
                cur.execute(insert_sql(t), row)
                assert cur.rowcount == 1, "CommandComplete must say INSERT 0 1"
    yield t
    with connect(weir) as conn:
        conn.execute(f"DROP TABLE {t}")


def assert_rows_equal(got, want):
    assert len(got) == len(want), got
    for g, w in zip(got, want):
        assert len(g) == len(w)
        for name, gv, wv in zip(COLUMNS.split(", "), g, w):
            assert type(gv) is type(wv), f"row {w[0]} column {name}: {gv!r} is not a {type(wv).__name__}"
            assert gv == wv, f"row {w[0]} column {name}: got {gv!r}, want {wv!r}"
            if isinstance(wv, dt.datetime) and wv.tzinfo is not None:
                assert gv.tzinfo is not None


def test_text_results_round_trip(weir, filled):
    with connect(weir) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {COLUMNS} FROM {filled} ORDER BY id")
        assert [c.name for c in cur.description] == COLUMNS.split(", ")
        assert [c.type_code for c in cur.description] == OIDS
        assert cur.pgresult.fformat(0) == pq.Format.TEXT
        assert_rows_equal(cur.fetchall(), ROWS)
        assert cur.rowcount == 4


def test_binary_results_round_trip(weir, filled):
    with connect(weir) as conn:
        with conn.cursor(binary=True) as cur:
            cur.execute(f"SELECT {COLUMNS} FROM {filled} ORDER BY id")
            assert [c.type_code for c in cur.description] == OIDS
            for i in range(len(OIDS)):
                assert cur.pgresult.fformat(i) == pq.Format.BINARY, f"column {i} not sent in binary"
            assert_rows_equal(cur.fetchall(), ROWS)
        # The per-execute flag, with a parameter, on a plain cursor.
        cur = conn.execute(f"SELECT {COLUMNS} FROM {filled} WHERE id = %s", (1,), binary=True)
        assert cur.pgresult.fformat(0) == pq.Format.BINARY
        assert_rows_equal(cur.fetchall(), ROWS[:1])


def test_executemany_pipelined_insert(weir, unique_name):
    t = unique_name("t_psycopg3_many")
    with connect(weir) as conn:
        conn.execute(DDL.format(t=t))
        with conn.cursor() as cur:
            cur.executemany(insert_sql(t), ROWS)
            cur.execute(f"SELECT {COLUMNS} FROM {t} ORDER BY id")
            assert_rows_equal(cur.fetchall(), ROWS)
        conn.execute(f"DROP TABLE {t}")


def test_pipeline_up_to_sync_is_one_transaction(weir, unique_name):
    # Outside a block, the statements of one Sync commit together: a failure undoes the
    # statements before it in the same pipeline, as in Postgres.
    t = unique_name("t_psycopg3_pipe")
    with connect(weir, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY)")
        conn.execute(f"INSERT INTO {t} VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.pipeline():
                conn.execute(f"INSERT INTO {t} VALUES (%s)", (2,))
                conn.execute(f"INSERT INTO {t} VALUES (%s)", (1,))
        assert conn.execute(f"SELECT id FROM {t} ORDER BY id").fetchall() == [(1,)]
        # A clean pipeline commits everything.
        with conn.pipeline():
            conn.execute(f"INSERT INTO {t} VALUES (%s)", (3,))
            conn.execute(f"INSERT INTO {t} VALUES (%s)", (4,))
        assert conn.execute(f"SELECT id FROM {t} ORDER BY id").fetchall() == [(1,), (3,), (4,)]
        conn.execute(f"DROP TABLE {t}")


def test_parameters_in_where(weir, filled):
    with connect(weir) as conn:
        # timestamptz (binary) and numeric (text) parameters.
        rows = conn.execute(
            f"SELECT id, price FROM {filled} WHERE ts >= %s AND price > %s ORDER BY id",
            (dt.datetime(1999, 12, 31, 21, 59, 59, tzinfo=UTC), Decimal("-0.5")),
        ).fetchall()
        assert rows == [(1, Decimal("12345.6789")), (2, Decimal("-0.0001")), (3, Decimal("0"))]

        # int8 parameter and an unknown-typed (str) parameter the server must infer as text.
        rows = conn.execute(
            f"SELECT id FROM {filled} WHERE big = %s OR name = %s ORDER BY id",
            (5_000_000_000, 'it\'s "quoted"\\'),
        ).fetchall()
        assert rows == [(1,), (2,)]

        # A str the server must infer as timestamptz from the column it is compared with.
        rows = conn.execute(
            f"SELECT id FROM {filled} WHERE ts < %s ORDER BY id", ("2000-01-01T00:00:01Z",)
        ).fetchall()
        assert rows == [(2,), (3,)]

        # %b forces a binary parameter, %t a text one.
        rows = conn.execute(
            f"SELECT id, ok FROM {filled} WHERE id >= %b AND ok = %t ORDER BY id", (2, True)
        ).fetchall()
        assert rows == [(3, True)]

        # Expressions over parameters.
        assert conn.execute("SELECT %s::int + 1", (41,)).fetchone() == (42,)
        assert conn.execute("SELECT %s::numeric * 2", (Decimal("1.25"),)).fetchone() == (Decimal("2.50"),)
        assert conn.execute("SELECT %s || 'b'", ("a",)).fetchone() == ("ab",)
        assert conn.execute("SELECT %s::boolean", (False,)).fetchone() == (False,)
        # NULL parameter.
        assert conn.execute(f"SELECT count(*) FROM {filled} WHERE big = %s", (None,)).fetchone() == (0,)


def test_update_delete_with_parameters(weir, filled):
    with connect(weir) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {filled} SET price = price + %s, name = %s WHERE id = %s",
                    (Decimal("0.0011"), "renamed", 1))
        assert cur.rowcount == 1
        cur.execute(f"DELETE FROM {filled} WHERE ok = %s", (False,))
        assert cur.rowcount == 1
        cur.execute(f"SELECT id, price, name FROM {filled} ORDER BY id")
        assert cur.fetchall() == [
            (1, Decimal("12345.6800"), "renamed"),
            (3, Decimal("0.0000"), ""),
            (4, None, None),
        ]


def test_named_prepared_statements_reused(weir, filled):
    with connect(weir) as conn:
        query = f"SELECT big, ts FROM {filled} WHERE id = %s"
        for _ in range(3):  # the same named statement (_pg3_n) across Syncs
            for row in ROWS:
                got = conn.execute(query, (row[0],), prepare=True).fetchone()
                assert got == (row[1], row[6])
        # psycopg forgets its statements after DEALLOCATE ALL and parses them again under the
        # same names: the server must really have dropped them.
        conn.execute("DEALLOCATE ALL")
        assert conn.execute(query, (1,), prepare=True).fetchone() == (ROWS[0][1], ROWS[0][6])
        # Above prepare_threshold (5) psycopg prepares on its own.
        for _ in range(8):
            assert conn.execute(f"SELECT name FROM {filled} WHERE id = %s", (2,)).fetchone() == (ROWS[1][4],)


def test_transactions(weir, unique_name):
    t = unique_name("t_psycopg3_tx")
    with connect(weir) as setup:
        setup.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, note text)")
    with connect(weir, autocommit=False) as conn:
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        conn.execute(f"INSERT INTO {t} VALUES (%s, %s)", (1, "rolled back"))
        # ReadyForQuery must report 'T' inside the implicit BEGIN.
        assert conn.info.transaction_status == pq.TransactionStatus.INTRANS
        conn.rollback()
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert conn.execute(f"SELECT count(*) FROM {t}").fetchone() == (0,)
        conn.commit()

        conn.execute(f"INSERT INTO {t} VALUES (%s, %s)", (2, "committed"))
        conn.commit()
        with pytest.raises(ZeroDivisionError):
            with conn.transaction():
                conn.execute(f"INSERT INTO {t} VALUES (%s, %s)", (3, "rolled back by exception"))
                1 / 0
        with conn.transaction():
            conn.execute(f"INSERT INTO {t} VALUES (%s, %s)", (4, "committed by block"))
    with connect(weir) as other:  # a different session sees only the committed rows
        assert other.execute(f"SELECT id, note FROM {t} ORDER BY id").fetchall() == [
            (2, "committed"), (4, "committed by block")
        ]
        other.execute(f"DROP TABLE {t}")


def test_errors_carry_sqlstate_and_leave_the_session_usable(weir, unique_name):
    missing = unique_name("t_missing")
    with connect(weir) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable) as e:
            conn.execute(f"SELECT * FROM {missing}")
        assert e.value.sqlstate == "42P01"
        assert missing in str(e.value)
        with pytest.raises(psycopg.errors.SyntaxError) as e:
            conn.execute("SELEC 1")
        assert e.value.sqlstate == "42601"
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0").fetchall()
        # Extended protocol error, then the next statement still works.
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(f"SELECT * FROM {missing} WHERE x = %s", (1,))
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)
    with connect(weir, autocommit=False) as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute(f"SELECT * FROM {missing}")
        # ReadyForQuery 'E': the transaction is aborted until ROLLBACK.
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_session_settings_and_parameter_status(weir, filled):
    with connect(weir) as conn:
        # server_version from ParameterStatus; libpq turns it into an int.
        assert conn.info.server_version >= 100000
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.parameter_status("standard_conforming_strings") == "on"
        assert conn.info.parameter_status("integer_datetimes") == "on"
        version = conn.execute("SELECT version()").fetchone()[0]
        assert version.startswith("PostgreSQL ")

        conn.execute("SET TIME ZONE 'UTC'")
        assert conn.info.parameter_status("TimeZone") == "UTC"
        assert conn.execute("SHOW TimeZone").fetchone() == ("UTC",)
        assert conn.execute(f"SELECT ts::text FROM {filled} WHERE id = 1").fetchone() == (
            "2026-11-23 08:00:00.123456+00",
        )
        conn.execute("SET TIME ZONE 'Europe/Berlin'")
        assert conn.info.parameter_status("TimeZone") == "Europe/Berlin"
        assert conn.execute(f"SELECT ts::text FROM {filled} WHERE id = 1").fetchone() == (
            "2026-11-23 09:00:00.123456+01",
        )
        # Same instant whatever the session zone.
        ts = conn.execute(f"SELECT ts FROM {filled} WHERE id = 1").fetchone()[0]
        assert ts == ROWS[0][6] and ts.utcoffset() == dt.timedelta(hours=1)


def test_type_info_lookup(weir):
    # psycopg's TypeInfo.fetch: `WHERE t.oid = to_regtype($1)` with an untyped parameter.
    with connect(weir) as conn:
        info = TypeInfo.fetch(conn, "timestamptz")
        assert info is not None and (info.oid, info.array_oid) == (1184, 1185)
        info = TypeInfo.fetch(conn, "numeric")
        assert info is not None and (info.oid, info.array_oid) == (1700, 1231)


# --- psycopg2 -----------------------------------------------------------------------------------

def test_psycopg2_connect_query_params(weir, unique_name):
    t = unique_name("t_psycopg2")
    conn = psycopg2.connect(weir.conninfo())
    try:
        assert conn.server_version >= 100000
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, amount numeric(10,2), note text, ok boolean, ts timestamptz)")
        conn.commit()
        rows = [
            (1, Decimal("10.50"), "first", True, dt.datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=PLUS2)),
            (2, Decimal("-3.25"), "it's", False, dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)),
            (3, None, None, None, None),
        ]
        for row in rows:
            cur.execute(f"INSERT INTO {t} (id, amount, note, ok, ts) VALUES (%s, %s, %s, %s, %s)", row)
            assert cur.rowcount == 1
        conn.commit()

        cur.execute(f"SELECT id, amount, note, ok, ts FROM {t} ORDER BY id")
        assert [d.name for d in cur.description] == ["id", "amount", "note", "ok", "ts"]
        got = cur.fetchall()
        assert got == rows
        assert isinstance(got[0][1], Decimal) and got[0][4].tzinfo is not None

        cur.execute(f"SELECT note FROM {t} WHERE amount > %s AND ts <= %s ORDER BY id",
                    (Decimal("0"), dt.datetime(2026, 11, 23, 8, 0, 0, 500000, tzinfo=UTC)))
        assert cur.fetchall() == [("first",)]
        cur.execute("SELECT %s + 1, %s", (41, "x"))
        assert cur.fetchone() == (42, "x")
        cur.execute(f"SELECT count(*), sum(amount) FROM {t}")
        assert cur.fetchone() == (3, Decimal("7.25"))
        conn.commit()

        # psycopg2 opens a transaction with BEGIN before the first statement.
        cur.execute(f"INSERT INTO {t} (id) VALUES (99)")
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        conn.rollback()
        cur.execute(f"SELECT count(*) FROM {t} WHERE id = 99")
        assert cur.fetchone() == (0,)
        conn.commit()

        cur.execute(f"DROP TABLE {t}")
        conn.commit()
    finally:
        conn.close()
