"""asyncpg against Weir.

asyncpg talks only the extended protocol with binary parameters and results. It sends
Parse + Describe(statement) + Flush *without* Sync and waits for ParameterDescription and
RowDescription before it binds, so the server must infer every parameter type itself (asyncpg
declares none). fetchrow/fetchval execute with max_rows = 1 and expect PortalSuspended; cursors
fetch in chunks from one portal. Its startup packet carries client_encoding='utf-8' (quoted).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal

import asyncpg
import pytest

UTC = dt.timezone.utc

DDL = """CREATE TABLE {t} (
    id int PRIMARY KEY,
    amount numeric(12,4),
    ts timestamptz,
    note text,
    big bigint,
    ok boolean,
    d date,
    f double precision,
    exact numeric(30,15)
)"""
INSERT = "INSERT INTO {t} (id, amount, ts, note, big, ok, d, f, exact) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
ROWS = [
    (1, Decimal("12345.6789"), dt.datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC), "alpha éß☃",
     5_000_000_000, True, dt.date(2026, 11, 23), 0.1, Decimal("12345.678901234567890")),
    (2, Decimal("-0.0001"), dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC), 'it\'s "quoted"\\',
     -9_007_199_254_740_993, False, dt.date(1970, 1, 1), -2.5e-300, Decimal("-0.000000000000001")),
    (3, Decimal("0"), dt.datetime(2000, 1, 1, tzinfo=UTC), "",
     0, True, dt.date(2000, 2, 29), 1e300, Decimal("100000000000000")),
    (4, None, None, None, None, None, None, None, None),
]


def run(coro):
    """Runs one test body; a server that stops answering fails it instead of hanging."""
    return asyncio.run(asyncio.wait_for(coro, timeout=90))


async def connect(weir) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=weir.host, port=weir.port, user="weir", database="weir", timeout=10
    )


def check_row(got: asyncpg.Record, want: tuple, names: list[str]):
    for name, wv in zip(names, want):
        gv = got[name]
        assert type(gv) is type(wv), f"row {want[0]} {name}: {gv!r} is not a {type(wv).__name__}"
        assert gv == wv, f"row {want[0]} {name}: got {gv!r}, want {wv!r}"


def test_prepared_insert_select_timestamptz_numeric(weir, unique_name):
    t = unique_name("t_asyncpg")

    async def body():
        conn = await connect(weir)
        try:
            assert conn.get_server_version().major >= 10
            await conn.execute(DDL.format(t=t))

            ins = await conn.prepare(INSERT.format(t=t))
            # ParameterDescription: the server inferred each $n from the target column.
            assert [p.name for p in ins.get_parameters()] == [
                "int4", "numeric", "timestamptz", "text", "int8", "bool", "date", "float8", "numeric",
            ]
            assert ins.get_attributes() == ()  # NoData
            await ins.executemany(ROWS[:3])
            # conn.execute with arguments: a fresh prepared statement; returns the command tag.
            assert await conn.execute(INSERT.format(t=t), *ROWS[3]) == "INSERT 0 1"

            sel = await conn.prepare(
                f"SELECT id, amount, ts, note, exact FROM {t} WHERE ts >= $1 AND amount > $2 ORDER BY id"
            )
            assert [p.name for p in sel.get_parameters()] == ["timestamptz", "numeric"]
            assert [(a.name, a.type.name) for a in sel.get_attributes()] == [
                ("id", "int4"), ("amount", "numeric"), ("ts", "timestamptz"), ("note", "text"), ("exact", "numeric"),
            ]
            names = ["id", "amount", "ts", "note", "exact"]
            pick = lambda r: (r[0], r[1], r[2], r[3], r[8])  # noqa: E731

            # The same statement with several parameter sets.
            got = await sel.fetch(dt.datetime(2000, 1, 1, tzinfo=UTC), Decimal("-0.5"))
            assert [r["id"] for r in got] == [1, 3]
            for r, w in zip(got, [ROWS[0], ROWS[2]]):
                check_row(r, pick(w), names)
            got = await sel.fetch(dt.datetime(1990, 1, 1, tzinfo=UTC), Decimal("-1"))
            assert [r["id"] for r in got] == [1, 2, 3]
            for r, w in zip(got, ROWS[:3]):
                check_row(r, pick(w), names)
            got = await sel.fetch(dt.datetime(2026, 11, 23, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=-1))),
                                  Decimal("12345.6"))
            assert [r["id"] for r in got] == [1]

            # max_rows = 1 → PortalSuspended, then the portal is dropped.
            row = await sel.fetchrow(dt.datetime(1990, 1, 1, tzinfo=UTC), Decimal("-1"))
            check_row(row, pick(ROWS[0]), names)
            assert await sel.fetchval(dt.datetime(1990, 1, 1, tzinfo=UTC), Decimal("-1"), column=2) == ROWS[0][2]

            full = await conn.fetch(f"SELECT id, amount, ts, note, big, ok, d, f, exact FROM {t} ORDER BY id")
            assert len(full) == 4
            for r, w in zip(full, ROWS):
                check_row(r, w, ["id", "amount", "ts", "note", "big", "ok", "d", "f", "exact"])

            assert await conn.fetchval("SELECT $1::numeric + 1", Decimal("41.5")) == Decimal("42.5")
            assert await conn.fetchval(
                f"SELECT count(*) FROM {t} WHERE note = $1 AND ok = $2 AND d = $3",
                'it\'s "quoted"\\', False, dt.date(1970, 1, 1),
            ) == 1
            await conn.execute(f"DROP TABLE {t}")
        finally:
            await conn.close()

    run(body())


def test_cursor_fetches_in_chunks(weir, unique_name):
    t = unique_name("t_asyncpg_cur")

    async def body():
        conn = await connect(weir)
        try:
            await conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v bigint)")
            await conn.executemany(f"INSERT INTO {t} (id, v) VALUES ($1, $2)", [(i, i * i) for i in range(1, 11)])
            async with conn.transaction():
                # prefetch=3: Execute(max_rows=3) repeatedly on one portal until CommandComplete.
                got = [(r["id"], r["v"]) async for r in conn.cursor(f"SELECT id, v FROM {t} WHERE id <= $1 ORDER BY id", 100, prefetch=3)]
                assert got == [(i, i * i) for i in range(1, 11)]
                cur = await conn.cursor(f"SELECT id FROM {t} ORDER BY id")
                assert [r["id"] for r in await cur.fetch(4)] == [1, 2, 3, 4]
                assert [r["id"] for r in await cur.fetch(4)] == [5, 6, 7, 8]
                assert (await cur.fetchrow())["id"] == 9
            await conn.execute(f"DROP TABLE {t}")
        finally:
            await conn.close()

    run(body())


def test_transactions_and_errors(weir, unique_name):
    t = unique_name("t_asyncpg_tx")
    missing = unique_name("t_missing")

    async def body():
        conn = await connect(weir)
        try:
            await conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, note text)")
            tr = conn.transaction()
            await tr.start()  # "BEGIN;"
            await conn.execute(f"INSERT INTO {t} VALUES ($1, $2)", 1, "rolled back")
            assert conn.is_in_transaction()
            await tr.rollback()  # "ROLLBACK;"
            assert not conn.is_in_transaction()
            assert await conn.fetchval(f"SELECT count(*) FROM {t}") == 0

            async with conn.transaction():
                await conn.execute(f"INSERT INTO {t} VALUES ($1, $2)", 2, "committed")
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} VALUES ($1, $2)", 3, "rolled back")
                    raise RuntimeError("abort")
            assert await conn.fetch(f"SELECT id, note FROM {t} ORDER BY id") == [(2, "committed")]

            # An error answering Parse/Describe (sent without Sync): the server must skip to the
            # Sync asyncpg sends next, and the connection must stay usable.
            with pytest.raises(asyncpg.exceptions.UndefinedTableError) as e:
                await conn.fetch(f"SELECT * FROM {missing} WHERE id = $1", 1)
            assert e.value.sqlstate == "42P01"
            with pytest.raises(asyncpg.exceptions.DivisionByZeroError):
                await conn.fetchval("SELECT 1/0")
            assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
            await conn.execute(f"DROP TABLE {t}")
        finally:
            await conn.close()

    run(body())


def test_all_column_types_decode(weir, unique_name):
    """Every contract type must come back with an OID asyncpg decodes natively (an OID it does
    not know makes it look the type up in pg_type)."""
    t = unique_name("t_asyncpg_types")

    async def body():
        conn = await connect(weir)
        try:
            await conn.execute(
                f"CREATE TABLE {t} (a smallint, b int, c bigint, e real, f double precision, "
                f"g numeric(10,3), h text, i varchar(10), j boolean, k date, l timestamp, m timestamptz)"
            )
            await conn.execute(
                f"INSERT INTO {t} VALUES (-5, 100000, 10000000000, 1.5, 2.25, 3.125, 'txt', 'vc', true, "
                f"'2026-11-23', '2026-11-23 10:11:12.5', '2026-11-23 10:11:12.5+00')"
            )
            stmt = await conn.prepare(f"SELECT * FROM {t}")
            assert [a.type.name for a in stmt.get_attributes()] == [
                "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar", "bool", "date",
                "timestamp", "timestamptz",
            ]
            row = await stmt.fetchrow()
            assert tuple(row) == (
                -5, 100000, 10_000_000_000, 1.5, 2.25, Decimal("3.125"), "txt", "vc", True,
                dt.date(2026, 11, 23), dt.datetime(2026, 11, 23, 10, 11, 12, 500000),
                dt.datetime(2026, 11, 23, 10, 11, 12, 500000, tzinfo=UTC),
            )
            assert row["l"].tzinfo is None and row["m"].tzinfo is not None
            await conn.execute(f"DROP TABLE {t}")
        finally:
            await conn.close()

    run(body())


def test_text_format_type_codec(weir):
    """A text-format codec: asyncpg then binds the numeric parameter in text (format 0) and asks
    for a text result, next to binary everywhere else."""

    async def body():
        conn = await connect(weir)
        try:
            await conn.set_type_codec(
                "numeric", schema="pg_catalog", encoder=str, decoder=lambda s: ("dec", s), format="text"
            )
            assert await conn.fetchval("SELECT $1::numeric + 1", "41.5") == ("dec", "42.5")
            assert await conn.fetchval("SELECT NULL::numeric") is None
        finally:
            await conn.close()

    run(body())
