"""Arrow Flight SQL through a real client: the ADBC Flight SQL driver (Go, loaded by
adbc_driver_manager) and its DB-API layer, with pandas and polars on top as the README shows them.

Every value read over Flight is compared with the same query over psycopg (the Postgres wire).
What the driver sends: `cursor.execute(sql)` is GetFlightInfo (Weir runs the statement there and
keeps its result under the ticket) then DoGet; with `parameters=` it is CreatePreparedStatement,
a DoPut of the parameter batch, then GetFlightInfo and DoGet of the prepared query; `executemany`
and `execute_update` are DoPut updates answered with a row count; the `adbc_get_*` calls are
GetCatalogs, GetDbSchemas, GetTables (with schemas), GetTableTypes and GetSqlInfo. `SUBSCRIBE`
is a query whose DoGet stream never ends: the client reads it batch by batch and closes it.
Weir-only: Postgres has no Flight SQL endpoint.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import urllib.request
from collections import Counter
from decimal import Decimal

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pandas
import polars
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

pytestmark = [
    pytest.mark.skipif(
        bool(os.environ.get("WEIR_TEST_EXTERNAL_PG")), reason="Flight SQL is Weir's endpoint, not Postgres's"
    ),
    # The SUBSCRIBE tests read a stream that never ends: bound them well below the suite's 120 s.
    pytest.mark.timeout(60),
]

UTC = dt.timezone.utc
PLUS2 = dt.timezone(dt.timedelta(hours=2))

# --- helpers ----------------------------------------------------------------------------------


def flight(weir) -> flight_sql.Connection:
    """A Flight SQL connection as the README shows it. autocommit=True: Weir commits every request
    on its own (it advertises no transactions), and without it the DB-API layer warns that it
    "cannot disable autocommit"."""
    return flight_sql.connect(weir.flight_uri(), autocommit=True)


@pytest.fixture
def pg(weir):
    with psycopg.connect(weir.conninfo(), autocommit=True) as conn:
        yield conn


def pg_rows(pg: psycopg.Connection, sql: str, params=None) -> list[tuple]:
    return pg.execute(sql, params).fetchall()


def arrow_rows(table: pa.Table) -> list[tuple]:
    """An Arrow table as psycopg-like tuples, in column order."""
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns)) if columns else []


def update(cur, sql: str) -> int:
    """A DoPut update (CommandStatementUpdate): the row count the server answers."""
    cur.adbc_statement.set_sql_query(sql)
    return cur.adbc_statement.execute_update()


# --- 1. queries to Arrow ----------------------------------------------------------------------

TYPES_DDL = """CREATE TABLE {t} (
    id int,
    big bigint,
    name text,
    f double precision,
    ok boolean,
    price numeric(10,2),
    d date,
    ts timestamp,
    tstz timestamptz
)"""
TYPES_COLUMNS = ["id", "big", "name", "f", "ok", "price", "d", "ts", "tstz"]
TYPES_ROWS = [
    (1, 5_000_000_000, "alpha éß☃", 0.1, True, Decimal("12345678.90"), dt.date(2026, 11, 23),
     dt.datetime(2026, 11, 23, 8, 0, 0, 123456), dt.datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC)),
    # Before 1970 (negative microseconds since the epoch); timestamptz given at +02:00.
    (2, -9_007_199_254_740_993, 'it\'s "quoted"\\', -2.5e-300, False, Decimal("-0.01"), dt.date(1969, 12, 31),
     dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=PLUS2)),
    (3, 0, "", 1e300, True, Decimal("0.00"), dt.date(2000, 2, 29),
     dt.datetime(2000, 1, 1), dt.datetime(2000, 1, 1, tzinfo=UTC)),
    (4, None, None, None, None, None, None, None, None),
    (None, -1, "only id is NULL", 0.0, False, Decimal("99999999.99"), dt.date(1, 1, 1),
     dt.datetime(2262, 4, 11, 23, 47, 16, 854775), dt.datetime(1677, 9, 21, 0, 12, 44, tzinfo=UTC)),
]
# The Arrow type of each column, and the Postgres type Weir names in the field's metadata.
EXPECTED_TYPES = {
    "id": (pa.int32(), "integer"),
    "big": (pa.int64(), "bigint"),
    "name": ((pa.string(), pa.string_view()), "text"),
    "f": (pa.float64(), "double precision"),
    "ok": (pa.bool_(), "boolean"),
    "price": (pa.decimal128(10, 2), "numeric(10,2)"),
    "d": (pa.date32(), "date"),
    "ts": (pa.timestamp("us"), "timestamp without time zone"),
    # Weir names UTC as the offset "+00:00" (pyarrow reads it as datetime.timezone.utc).
    "tstz": (pa.timestamp("us", tz="+00:00"), "timestamp with time zone"),
}
SELECT_TYPES = f"SELECT {', '.join(TYPES_COLUMNS)} FROM {{t}} ORDER BY id NULLS LAST"


@pytest.fixture
def types_table(weir, pg, unique_name):
    t = unique_name("t_flight_types")
    pg.execute(TYPES_DDL.format(t=t))
    with pg.cursor() as cur:
        cur.executemany(f"INSERT INTO {t} VALUES ({', '.join(['%s'] * len(TYPES_COLUMNS))})", TYPES_ROWS)
    yield t
    pg.execute(f"DROP TABLE {t}")


def assert_arrow_types(schema: pa.Schema) -> None:
    assert schema.names == TYPES_COLUMNS
    for field in schema:
        arrow_type, pg_type = EXPECTED_TYPES[field.name]
        allowed = arrow_type if isinstance(arrow_type, tuple) else (arrow_type,)
        assert field.type in allowed, f"{field.name}: {field.type}, expected one of {allowed}"
        assert (field.metadata or {}).get(b"weir.pg_type") == pg_type.encode(), (field.name, field.metadata)


def test_query_to_arrow_has_the_types_and_values_psycopg_reads(weir, pg, types_table):
    sql = SELECT_TYPES.format(t=types_table)
    expected = pg_rows(pg, sql)
    assert len(expected) == len(TYPES_ROWS)
    with flight(weir) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    assert_arrow_types(table.schema)
    got = arrow_rows(table)
    assert len(got) == len(expected)
    for got_row, pg_row in zip(got, expected):
        for column, g, p in zip(TYPES_COLUMNS, got_row, pg_row):
            # Aware datetimes compare as instants; check the type too, so that 1 == 1.0 == True do
            # not hide a wrong conversion.
            assert g == p and type(g) is type(p), f"row id={pg_row[0]} column {column}: flight {g!r}, psycopg {p!r}"
        tstz = got_row[TYPES_COLUMNS.index("tstz")]
        if tstz is not None:
            assert tstz.utcoffset() == dt.timedelta(0), tstz
    # The rows as inserted, too (psycopg could be wrong in the same way).
    assert got == sorted(TYPES_ROWS, key=lambda r: (r[0] is None, r[0] or 0))


def test_dbapi_fetchall_and_description(weir, pg, types_table):
    sql = SELECT_TYPES.format(t=types_table)
    with flight(weir) as conn, conn.cursor() as cur:
        cur.execute(sql)
        assert [d[0] for d in cur.description] == TYPES_COLUMNS
        rows = cur.fetchall()
    assert rows == pg_rows(pg, sql)


def test_a_result_of_many_batches_streams_whole(weir, pg):
    sql = "SELECT x, x * 2 AS y FROM generate_series(1, 100000) AS g(x)"
    with flight(weir) as conn, conn.cursor() as cur:
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        batches = list(reader)
    assert len(batches) > 1, "DoGet streams the result batch by batch"
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 100000
    assert pc.sum(table["x"]).as_py() == 5000050000
    assert pc.sum(table["y"]).as_py() == pg_rows(pg, f"SELECT sum(y) FROM ({sql}) AS q")[0][0]


# --- 2. prepared statements with parameters ---------------------------------------------------


def test_prepared_query_with_parameters_runs_twice_on_one_cursor(weir, pg, unique_name):
    t = unique_name("t_flight_prep")
    pg.execute(f"CREATE TABLE {t} (id int, name text, price numeric(10,2), d date, ts timestamp, tstz timestamptz)")
    pg.execute(
        f"INSERT INTO {t} VALUES (1, 'a', 1.50, '2026-01-01', '2026-01-01 10:00:00', '2026-01-01 10:00:00+00'),"
        " (2, 'b', 2.25, '2026-01-02', '2026-01-02 10:00:00.5', '2026-01-02 12:00:00+02'),"
        " (3, 'b', NULL, NULL, NULL, NULL)"
    )
    sql = f"SELECT id, name FROM {t} WHERE id = $1 AND name = $2"
    with flight(weir) as conn, conn.cursor() as cur:
        # The statement's parameter types, as CreatePreparedStatement answers them.
        param_schema = cur.adbc_prepare(sql)
        assert param_schema.types == [pa.int32(), pa.string()], param_schema

        cur.execute(sql, parameters=(2, "b"))
        first = cur.fetchall()
        cur.execute(sql, parameters=(3, "b"))
        second = cur.fetchall()
        cur.execute(sql, parameters=(3, "a"))
        none = cur.fetchall()

        # Parameters of other types, each cast to its column's type by the server.
        typed = {}
        for column, value in [
            ("price", Decimal("2.25")),
            ("d", dt.date(2026, 1, 2)),
            ("ts", dt.datetime(2026, 1, 2, 10, 0, 0, 500000)),
            ("tstz", dt.datetime(2026, 1, 2, 10, 0, tzinfo=UTC)),
        ]:
            cur.execute(f"SELECT id FROM {t} WHERE {column} = $1", parameters=(value,))
            typed[column] = cur.fetchall()
    assert first == pg_rows(pg, f"SELECT id, name FROM {t} WHERE id = %s AND name = %s", (2, "b")) == [(2, "b")]
    assert second == [(3, "b")]
    assert none == []
    assert typed == {"price": [(2,)], "d": [(2,)], "ts": [(2,)], "tstz": [(2,)]}


def test_executemany_inserts_every_row(weir, pg, unique_name):
    t = unique_name("t_flight_many")
    pg.execute(f"CREATE TABLE {t} (id int, name text)")
    rows = [(1, "one"), (2, None), (3, "three"), (4, "")]
    with flight(weir) as conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {t} VALUES ($1, $2)", rows)
        assert cur.rowcount == len(rows)
        # The connection still answers queries afterwards, and sees the rows.
        cur.execute(f"SELECT count(*) FROM {t}")
        assert cur.fetchone() == (len(rows),)
    assert pg_rows(pg, f"SELECT id, name FROM {t} ORDER BY id") == rows


def test_a_wrong_number_of_parameters_is_an_error(weir, unique_name, pg):
    t = unique_name("t_flight_params")
    pg.execute(f"CREATE TABLE {t} (id int)")
    with flight(weir) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="08P01"):
            cur.execute(f"SELECT id FROM {t} WHERE id = $1", parameters=(1, 2))
        cur.execute(f"SELECT id FROM {t} WHERE id = $1", parameters=(1,))
        assert cur.fetchall() == []


# --- 3. metadata ------------------------------------------------------------------------------


@pytest.fixture
def table_and_view(weir, pg, unique_name):
    """A table and a materialized view over it, named <prefix>_t and <prefix>_mv."""
    prefix = unique_name("flmeta")
    t, mv = f"{prefix}_t", f"{prefix}_mv"
    pg.execute(f"CREATE TABLE {t} (id int, k text, amount double precision, at timestamptz)")
    pg.execute(f"CREATE MATERIALIZED VIEW {mv} AS SELECT k, count(*) AS n FROM {t} GROUP BY k")
    yield prefix, t, mv
    pg.execute(f"DROP MATERIALIZED VIEW {mv}")
    pg.execute(f"DROP TABLE {t}")


def tables_of(objects: pa.RecordBatchReader) -> dict[tuple[str, str, str], dict]:
    """adbc_get_objects' nested answer as {(catalog, schema, table): table entry}."""
    found = {}
    for catalog in objects.read_all().to_pylist():
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                found[(catalog["catalog_name"], schema["db_schema_name"], table["table_name"])] = table
    return found


def test_get_objects_lists_the_table_with_its_columns(weir, table_and_view):
    _, t, _ = table_and_view
    with flight(weir) as conn:
        found = tables_of(conn.adbc_get_objects(depth="all", table_name_filter=t))
        catalogs = conn.adbc_get_objects(depth="catalogs").read_all().to_pylist()
    assert list(found) == [("weir", "public", t)]
    entry = found[("weir", "public", t)]
    assert entry["table_type"] == "TABLE"
    assert [(c["column_name"], c["ordinal_position"]) for c in entry["table_columns"]] == [
        ("id", 1), ("k", 2), ("amount", 3), ("at", 4)
    ]
    assert [c["catalog_name"] for c in catalogs] == ["weir"]


def test_get_objects_reports_a_materialized_view_and_filters_by_type(weir, table_and_view):
    prefix, t, mv = table_and_view
    with flight(weir) as conn:
        both = tables_of(conn.adbc_get_objects(depth="tables", db_schema_filter="public", table_name_filter=f"{prefix}%"))
        views = tables_of(conn.adbc_get_objects(
            depth="tables", table_name_filter=f"{prefix}%", table_types_filter=["MATERIALIZED VIEW"]
        ))
        tables = tables_of(conn.adbc_get_objects(
            depth="tables", table_name_filter=f"{prefix}%", table_types_filter=["TABLE"]
        ))
    assert {name: e["table_type"] for (_, _, name), e in both.items()} == {t: "TABLE", mv: "MATERIALIZED VIEW"}
    assert list(views) == [("weir", "public", mv)]
    assert list(tables) == [("weir", "public", t)]


def test_get_table_schema_gives_names_and_arrow_types(weir, table_and_view, pg):
    _, t, mv = table_and_view
    with flight(weir) as conn:
        table_schema = conn.adbc_get_table_schema(t)
        view_schema = conn.adbc_get_table_schema(mv, db_schema_filter="public")
        with pytest.raises(adbc_driver_manager.Error):
            conn.adbc_get_table_schema(f"{t}_missing")
    assert table_schema.names == ["id", "k", "amount", "at"]
    assert table_schema.types[0] == pa.int32()
    assert table_schema.types[1] in (pa.string(), pa.string_view())
    assert table_schema.types[2] == pa.float64()
    assert table_schema.types[3] == pa.timestamp("us", tz="+00:00")
    assert view_schema.names == ["k", "n"]
    assert view_schema.types[0] in (pa.string(), pa.string_view())
    assert view_schema.types[1] == pa.int64(), "count(*) is a bigint"
    # The same names a query over the Postgres wire describes.
    with pg.cursor() as cur:
        cur.execute(f"SELECT * FROM {mv} LIMIT 0")
        assert [d.name for d in cur.description] == view_schema.names


def test_get_table_types_and_info(weir):
    with flight(weir) as conn:
        table_types = conn.adbc_get_table_types()
        info = conn.adbc_get_info()
    assert {"TABLE", "MATERIALIZED VIEW", "SOURCE", "VIEW"} <= set(table_types), table_types
    assert info["vendor_name"] == "Weir"
    assert isinstance(info["vendor_version"], str) and info["vendor_version"], info


# --- 4. DDL and DML as updates ----------------------------------------------------------------


def test_ddl_and_dml_through_execute_update(weir, pg, unique_name):
    t = unique_name("t_flight_upd")
    with flight(weir) as conn, conn.cursor() as cur:
        # Postgres's CREATE TABLE tag carries no row count: Weir answers 0.
        assert update(cur, f"CREATE TABLE {t} (id int, name text)") in (0, -1)
        assert update(cur, f"INSERT INTO {t} VALUES (1, 'a'), (2, 'b'), (3, NULL)") == 3
        assert update(cur, f"UPDATE {t} SET name = 'B' WHERE id = 2") == 1
        assert update(cur, f"DELETE FROM {t} WHERE id = 1") == 1
        # Several statements in one update commit together; the count is their sum.
        assert update(cur, f"INSERT INTO {t} VALUES (4, 'd'); INSERT INTO {t} VALUES (5, 'e'), (6, 'f')") == 3
        # ... and a failing one takes the others with it.
        with pytest.raises(adbc_driver_manager.Error, match="42P01"):
            update(cur, f"INSERT INTO {t} VALUES (7, 'g'); INSERT INTO {t}_missing VALUES (8)")
    assert pg_rows(pg, f"SELECT id, name FROM {t} ORDER BY id") == [
        (2, "B"), (3, None), (4, "d"), (5, "e"), (6, "f")
    ]


# --- 5. errors ---------------------------------------------------------------------------------


def test_errors_carry_the_sqlstate_and_the_connection_survives(weir, unique_name):
    missing = unique_name("t_flight_missing")
    with flight(weir) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.ProgrammingError) as undefined:
            cur.execute(f"SELECT * FROM {missing}")
        assert "42P01" in str(undefined.value), str(undefined.value)
        assert missing in str(undefined.value)
        # Weir also sends the SQLSTATE alone, as gRPC metadata.
        assert (b"x-weir-sqlstate", b"42P01") in undefined.value.details, undefined.value.details

        with pytest.raises(adbc_driver_manager.Error) as syntax:
            cur.execute("SELEC 1")
        assert "42601" in str(syntax.value), str(syntax.value)

        # A transaction block cannot span Flight SQL requests: refused, not silently ignored.
        with pytest.raises(adbc_driver_manager.Error, match="0A000"):
            cur.execute("BEGIN")
        with pytest.raises(adbc_driver_manager.Error, match="42601"):
            cur.execute("SELECT 1; SELECT 2")

        # The same cursor and connection still work.
        cur.execute("SELECT 1 AS one, 'x' AS x")
        assert cur.fetchall() == [(1, "x")]
    with flight(weir) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="42P01"):
            update(cur, f"INSERT INTO {missing} VALUES (1)")
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)


# --- 6. README examples: pandas and polars ---------------------------------------------------


@pytest.fixture
def readings(weir, pg, unique_name):
    t = unique_name("readings")
    pg.execute(f"CREATE TABLE {t} (sensor text, reading bigint, temp double precision)")
    pg.execute(f"INSERT INTO {t} VALUES ('s1', 10, 20.5), ('s2', 7, -3.25), ('s1', 12, 21.0), ('s3', 0, 0.0)")
    yield t
    pg.execute(f"DROP TABLE {t}")


def test_readme_pandas(weir, pg, readings):
    query = f"SELECT sensor, count(*) AS n, max(temp) AS max_temp FROM {readings} GROUP BY sensor ORDER BY sensor"

    # --- as in the README ---
    with flight_sql.connect(weir.flight_uri(), autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(query)
            df = cur.fetch_df()
    # ---

    assert isinstance(df, pandas.DataFrame)
    assert list(df.columns) == ["sensor", "n", "max_temp"]
    assert str(df["n"].dtype) == "int64" and str(df["max_temp"].dtype) == "float64"
    assert list(df.itertuples(index=False, name=None)) == pg_rows(pg, query)
    assert list(df["sensor"]) == ["s1", "s2", "s3"]


def test_readme_polars(weir, pg, readings):
    query = f"SELECT sensor, reading, temp FROM {readings} ORDER BY sensor, reading"

    # --- as in the README ---
    # (polars.read_database_uri(query, "grpc://...", engine="adbc") does not work: polars looks
    # for a driver module named after the URI scheme, adbc_driver_grpc, which does not exist.)
    with flight_sql.connect(weir.flight_uri(), autocommit=True) as conn:
        df = polars.read_database(query, connection=conn)
    # ---

    assert isinstance(df, polars.DataFrame)
    assert df.schema == polars.Schema({"sensor": polars.String, "reading": polars.Int64, "temp": polars.Float64})
    assert df.rows() == pg_rows(pg, query)


# --- 7. SUBSCRIBE over Flight -----------------------------------------------------------------

SUBSCRIBE_DEADLINE_S = 20.0


class Subscription:
    """Reads a SUBSCRIBE's record batches and folds its diffs into a multiset of rows."""

    def __init__(self, reader: pa.RecordBatchReader, progress: bool):
        self.reader = reader
        self.progress = progress
        self.batches = iter(reader)
        self.state: Counter = Counter()
        self.data_rows: list[dict] = []
        self.progress_epochs: list[int] = []
        self.last_epoch = -1

    def max_data_epoch(self) -> int:
        return max((r["weir_epoch"] for r in self.data_rows), default=-1)

    def caught_up(self) -> bool:
        """A progress row has come for an epoch at or after every data row read so far."""
        return bool(self.progress_epochs) and self.progress_epochs[-1] >= self.max_data_epoch()

    def read_until(self, done, what: str, deadline_s: float = SUBSCRIBE_DEADLINE_S) -> None:
        """Reads batches until done() holds. Progress rows come every few hundred milliseconds, so
        each wait for a batch is short and the deadline is checked often."""
        deadline = time.monotonic() + deadline_s
        while not done():
            assert time.monotonic() < deadline, (
                f"SUBSCRIBE: no {what} within {deadline_s:.0f}s; folded {dict(self.state)}, "
                f"data rows {self.data_rows[-10:]}, progress epochs {self.progress_epochs[-5:]}"
            )
            batch = next(self.batches)  # StopIteration would mean the stream ended: a failure too
            for row in batch.to_pylist():
                self.take(row)

    def take(self, row: dict) -> None:
        epoch = row["weir_epoch"]
        assert epoch >= self.last_epoch, f"epochs go backwards: {epoch} after {self.last_epoch}"
        self.last_epoch = epoch
        if self.progress and row["weir_progressed"]:
            # A progress row: no diff, no data.
            assert row["weir_diff"] is None and row["k"] is None and row["s"] is None, row
            self.progress_epochs.append(epoch)
            return
        assert row["weir_diff"] is not None and row["weir_diff"] != 0, row
        self.data_rows.append(row)
        key = (row["k"], row["s"])
        self.state[key] += row["weir_diff"]
        if self.state[key] == 0:
            del self.state[key]


def view_contents(pg: psycopg.Connection, mv: str) -> Counter:
    return Counter(pg_rows(pg, f"SELECT k, s FROM {mv}"))


@pytest.fixture
def summed(weir, pg, unique_name):
    """t(k text, n bigint) holding a 1, b 2, a 3, and mv = SELECT k, sum(n) AS s FROM t GROUP BY k."""
    t, mv = unique_name("t_flight_sub"), unique_name("mv_flight_sub")
    pg.execute(f"CREATE TABLE {t} (k text, n bigint)")
    pg.execute(f"INSERT INTO {t} VALUES ('a', 1), ('b', 2), ('a', 3)")
    pg.execute(f"CREATE MATERIALIZED VIEW {mv} AS SELECT k, sum(n) AS s FROM {t} GROUP BY k")
    pg.execute("FLUSH")
    assert view_contents(pg, mv) == Counter({("a", 4): 1, ("b", 2): 1})
    yield t, mv


def close_subscription(reader: pa.RecordBatchReader) -> None:
    """Stops reading a stream that never ends: closing the reader cancels the DoGet call (it
    returns at once); the cursor and the connection then close normally."""
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 5, "closing the reader of a never-ending stream took long"


def statements_running(weir) -> int:
    """Weir's weir_statements_running gauge: a DoGet stream counts until it ends."""
    with urllib.request.urlopen(f"http://{weir.host}:{weir.http_port}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("weir_statements_running "):
                return int(float(line.split()[1]))
    raise AssertionError("no weir_statements_running in /metrics")


def test_subscribe_streams_the_snapshot_then_the_changes(weir, pg, summed):
    t, mv = summed
    with flight(weir) as conn, conn.cursor() as cur:
        cur.execute(f"SUBSCRIBE {mv} WITH (progress = true)")
        reader = cur.fetch_record_batch()
        try:
            assert reader.schema.names == ["weir_epoch", "weir_diff", "weir_progressed", "k", "s"]
            assert reader.schema.types[:3] == [pa.int64(), pa.int64(), pa.bool_()]
            assert reader.schema.field("k").type in (pa.string(), pa.string_view())
            assert reader.schema.field("s").type == pa.int64()
            sub = Subscription(reader, progress=True)

            # The snapshot, complete once a progress row follows it.
            sub.read_until(lambda: sub.progress_epochs and sub.data_rows, "snapshot and progress row")
            assert sub.caught_up(), "the first progress row comes after the snapshot's rows"
            assert sub.state == view_contents(pg, mv)
            assert all(r["weir_diff"] == 1 for r in sub.data_rows)
            assert statements_running(weir) >= 1, "the open stream counts as a running statement"
            snapshot_epoch = sub.max_data_epoch()
            assert {r["weir_epoch"] for r in sub.data_rows} == {snapshot_epoch}, "one epoch"
            seen = len(sub.data_rows)

            # Changes while the stream is open: a new key, an update of one, a deletion of another.
            pg.execute(f"INSERT INTO {t} VALUES ('b', 10), ('c', 5)")
            pg.execute(f"DELETE FROM {t} WHERE k = 'a'")
            pg.execute("FLUSH")
            expected = view_contents(pg, mv)
            assert expected == Counter({("b", 12): 1, ("c", 5): 1})
            sub.read_until(lambda: sub.state == expected and sub.caught_up(), "folded state equal to the view")
            changes = sub.data_rows[seen:]
            assert all(r["weir_epoch"] > snapshot_epoch for r in changes), changes
            assert Counter({(r["k"], r["s"]): r["weir_diff"] for r in changes if r["k"] == "a"}) == Counter(
                {("a", 4): -1}
            ), "a's row retracted"
        finally:
            close_subscription(reader)
        # The connection still answers after the stream was abandoned.
        cur.execute(f"SELECT k, s FROM {mv} ORDER BY k")
        assert cur.fetchall() == [("b", 12), ("c", 5)]
    # The server noticed the client went away: the SUBSCRIBE no longer counts as running (a leaked
    # one would also hold up a graceful shutdown). Nothing else runs now: tests run one at a time.
    deadline = time.monotonic() + 10
    while statements_running(weir) != 0:
        assert time.monotonic() < deadline, f"{statements_running(weir)} statements still running after the close"
        time.sleep(0.05)


def test_subscribe_without_options_starts_with_the_snapshot(weir, pg, summed):
    _, mv = summed
    with flight(weir) as conn, conn.cursor() as cur:
        cur.execute(f"SUBSCRIBE {mv}")
        reader = cur.fetch_record_batch()
        try:
            assert reader.schema.names == ["weir_epoch", "weir_diff", "k", "s"], "no weir_progressed column"
            sub = Subscription(reader, progress=False)
            sub.read_until(lambda: len(sub.data_rows) >= 2, "snapshot rows")
            assert sub.state == view_contents(pg, mv)
        finally:
            close_subscription(reader)


def test_subscribe_without_snapshot_gets_only_later_changes(weir, pg, summed):
    t, mv = summed
    with flight(weir) as conn, conn.cursor() as cur:
        cur.execute(f"SUBSCRIBE {mv} WITH (snapshot = false, progress = true)")
        reader = cur.fetch_record_batch()
        try:
            sub = Subscription(reader, progress=True)
            # Two progress rows (the subscription is live and has passed an epoch) and no data:
            # the existing contents are not sent.
            sub.read_until(lambda: len(sub.progress_epochs) >= 2, "progress rows")
            assert sub.data_rows == [], sub.data_rows

            pg.execute(f"INSERT INTO {t} VALUES ('a', 5), ('c', 1)")
            pg.execute("FLUSH")
            assert view_contents(pg, mv) == Counter({("a", 9): 1, ("b", 2): 1, ("c", 1): 1})
            # Folding from nothing gives the changes alone: a's old sum retracted, the new one
            # and c added; b, unchanged, never appears.
            expected = Counter({("a", 9): 1, ("c", 1): 1})
            expected[("a", 4)] = -1
            sub.read_until(lambda: sub.state == expected and sub.caught_up(), "the insert's changes")
            assert min(r["weir_epoch"] for r in sub.data_rows) > sub.progress_epochs[0]
        finally:
            close_subscription(reader)
