"""SQLAlchemy 2 (postgresql+psycopg) against Weir.

On its first connection the dialect runs `select pg_catalog.version()` (parsed: must start with
"PostgreSQL "), `select current_schema()`, `show transaction isolation level`,
`show standard_conforming_strings`, and looks up hstore inside SAVEPOINT/RELEASE. Reflection
(`inspect()`, `autoload_with`) queries pg_class/pg_attribute/pg_constraint/pg_index with
json_build_object, pg_get_serial_sequence, ::regclass, generate_subscripts, unnest(int2vector),
pg_get_constraintdef, pg_get_indexdef, all with $n::VARCHAR parameters.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import (
    BigInteger, Boolean, Column, DateTime, Integer, MetaData, Numeric, String, Table, create_engine,
    delete, inspect, select, text, update,
)

UTC = dt.timezone.utc

# Column name -> (how SQLAlchemy's PostgreSQL dialect renders the reflected type, nullable)
EXPECTED_COLUMNS = [
    ("id", "INTEGER", False),
    ("big", "BIGINT", False),
    ("small", "SMALLINT", True),
    ("price", "NUMERIC(12, 4)", True),
    ("name", "TEXT", True),
    ("label", "VARCHAR(40)", True),
    ("ok", "BOOLEAN", True),
    ("d", "DATE", True),
    ("tsn", "TIMESTAMP WITHOUT TIME ZONE", True),
    ("ts", "TIMESTAMP WITH TIME ZONE", True),
    ("f", "DOUBLE PRECISION", True),
    ("r", "REAL", True),
]


@pytest.fixture(scope="module")
def engine(weir):
    eng = create_engine(weir.url("postgresql+psycopg"))
    yield eng
    eng.dispose()


def test_connect_and_server_version(engine):
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1 + 1")).scalar_one() == 2
        # The dialect parsed version() into a tuple; psql-era features key off it.
        assert engine.dialect.server_version_info >= (10,)
        assert conn.execute(text("select current_schema()")).scalar_one() == "public"
        assert conn.execute(text("SELECT CAST(:a AS integer) * 3"), {"a": 14}).scalar_one() == 42


def test_inspect_tables_columns_primary_key(engine, unique_name):
    t = unique_name("t_sqla")
    t2 = unique_name("t_sqla_pk2")
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE TABLE {t} (id int PRIMARY KEY, big bigint NOT NULL, small smallint, "
            f"price numeric(12,4), name text, label varchar(40), ok boolean, d date, "
            f"tsn timestamp, ts timestamptz, f double precision, r real)"
        ))
        conn.execute(text(f"CREATE TABLE {t2} (a int, b text, c bigint, PRIMARY KEY (b, a))"))
    try:
        insp = inspect(engine)
        tables = insp.get_table_names()
        assert t in tables and t2 in tables
        assert not any(name.startswith(("pg_", "sql_")) for name in tables), tables
        assert insp.has_table(t) and not insp.has_table(t + "_nope")

        cols = insp.get_columns(t)
        got = [(c["name"], c["type"].compile(dialect=engine.dialect), c["nullable"]) for c in cols]
        assert got == EXPECTED_COLUMNS
        by_name = {c["name"]: c for c in cols}
        assert by_name["price"]["type"].precision == 12 and by_name["price"]["type"].scale == 4
        assert by_name["label"]["type"].length == 40
        assert by_name["ts"]["type"].timezone is True and by_name["tsn"]["type"].timezone is False
        assert all(c["default"] is None for c in cols)

        pk = insp.get_pk_constraint(t)
        assert pk["constrained_columns"] == ["id"]
        assert pk["name"] == f"{t}_pkey"  # PostgreSQL's default constraint name
        pk2 = insp.get_pk_constraint(t2)
        assert pk2["constrained_columns"] == ["b", "a"]  # key order, not column order
        assert [(c["name"], c["nullable"]) for c in insp.get_columns(t2)] == [
            ("a", False), ("b", False), ("c", True)
        ]
        assert insp.get_foreign_keys(t) == []
        assert insp.get_indexes(t) == []  # the primary key's index is not listed
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE {t}"))
            conn.execute(text(f"DROP TABLE {t2}"))
    assert t not in inspect(engine).get_table_names()


def test_core_create_insert_select_reflect(engine, unique_name):
    t = unique_name("t_sqla_core")
    md = MetaData()
    table = Table(
        t, md,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("big", BigInteger),
        Column("amount", Numeric(12, 4)),
        Column("ts", DateTime(timezone=True)),
        Column("name", String(40)),
        Column("ok", Boolean),
    )
    # SQLAlchemy renders: CREATE TABLE t (id INTEGER NOT NULL, ..., PRIMARY KEY (id))
    md.create_all(engine)
    try:
        rows = [
            {"id": 1, "big": 5_000_000_000, "amount": Decimal("12345.6789"),
             "ts": dt.datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC), "name": "alpha éß☃", "ok": True},
            {"id": 2, "big": -1, "amount": Decimal("-0.5"),
             "ts": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), "name": "it's", "ok": False},
            {"id": 3, "big": None, "amount": None, "ts": None, "name": None, "ok": None},
        ]
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)  # executemany ("insertmanyvalues" batches)
            assert conn.execute(select(table.c.id).order_by(table.c.id)).scalars().all() == [1, 2, 3]
        with engine.connect() as conn:
            got = conn.execute(select(table).order_by(table.c.id)).mappings().all()
            assert [dict(r) for r in got] == rows
            got = conn.execute(
                select(table.c.id, table.c.amount)
                .where(table.c.ts >= dt.datetime(1999, 1, 1, tzinfo=UTC), table.c.amount > Decimal("-1"))
                .order_by(table.c.id)
            ).all()
            assert got == [(1, Decimal("12345.6789")), (2, Decimal("-0.5"))]
        with engine.begin() as conn:
            assert conn.execute(update(table).where(table.c.id == 2).values(name="renamed")).rowcount == 1
            assert conn.execute(delete(table).where(table.c.id == 3)).rowcount == 1

        # Full reflection of the table (every per-table reflection query), then use it.
        reflected = Table(t, MetaData(), autoload_with=engine)
        assert [c.name for c in reflected.columns] == ["id", "big", "amount", "ts", "name", "ok"]
        assert [c.name for c in reflected.primary_key.columns] == ["id"]
        with engine.connect() as conn:
            got = conn.execute(select(reflected.c.name).order_by(reflected.c.id)).scalars().all()
            assert got == ["alpha éß☃", "renamed"]
    finally:
        md.drop_all(engine)
    assert not inspect(engine).has_table(t)
