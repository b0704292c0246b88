"""Replays what Grafana's PostgreSQL data source sends, with the simple query protocol.

Grafana is not installable here, so the statements below are copied from a real Grafana session
against PostgreSQL 15 (shared/reference/client_sql.txt, check 7a/7b): the "Save & test" pings (an
empty query: `;` from lib/pq, `-- ping` from pgx, answered with EmptyQueryResponse), the version and
TimescaleDB probes, the schema/table/column pickers (quote_ident, parse_ident, search_path
parsing) and macro-expanded panel queries ($__timeGroupAlias, $__timeFilter,
$__unixEpochFilter). Expected values are computed in Python from the inserted rows.

Two clients: psycopg's ClientCursor (client-side binding, every statement a simple Query) and a
minimal wire client that sends the startup parameters of Grafana's Go drivers
(datestyle='ISO, MDY', extra_float_digits=2, client_encoding=UTF8; no SSLRequest).
"""

from __future__ import annotations

import datetime as dt
import math
import socket
import struct
from collections import defaultdict
from decimal import Decimal

import psycopg
import pytest
from psycopg import pq

UTC = dt.timezone.utc

# (time, value, host) as in the reference session; epoch is derived.
DATA = [
    ("2026-11-23T09:59:30Z", 100.0, "a"),
    ("2026-11-23T10:00:05Z", 1.0, "a"),
    ("2026-11-23T10:00:35Z", 3.0, "a"),
    ("2026-11-23T10:00:50Z", 10.0, "b"),
    ("2026-11-23T10:01:10Z", 5.0, "a"),
    ("2026-11-23T10:02:59.999Z", 7.0, "b"),
    ("2026-11-23T10:59:59Z", 2.0, "a"),
    ("2026-11-23T11:00:00Z", 4.0, "a"),
    ("2026-11-23T11:00:01Z", 1000.0, "a"),
]
FROM = "2026-11-23T10:00:00Z"
TO = "2026-11-23T11:00:00Z"


def ts(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


ROWS = [(ts(t), v, h, math.floor(ts(t).timestamp())) for t, v, h in DATA]
LO, HI = ts(FROM), ts(TO)
IN_RANGE = [r for r in ROWS if LO <= r[0] <= HI]  # BETWEEN is inclusive at both ends


def create_and_fill(cur, t: str) -> None:
    cur.execute(f"CREATE TABLE {t} (time timestamptz, value double precision, host text, epoch bigint)")
    values = ", ".join(f"('{t_}', {v!r}, '{h}', {e})" for (t_, v, h), (_, _, _, e) in zip(DATA, ROWS))
    cur.execute(f"INSERT INTO {t} (time, value, host, epoch) VALUES {values}")
    assert cur.rowcount == len(DATA)


@pytest.fixture
def simple(weir):
    """psycopg with client-side binding: every execute() is one simple-protocol Query."""
    with psycopg.connect(weir.conninfo(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        yield conn


@pytest.fixture
def metrics(weir, unique_name):
    t = unique_name("t_grafana")
    with psycopg.connect(weir.conninfo(), autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        create_and_fill(conn.cursor(), t)
        yield t
        conn.execute(f"DROP TABLE IF EXISTS {t}")


def test_ping_and_probes(simple):
    # "Save & test": empty queries must give EmptyQueryResponse, not an error.
    for ping in (b";", b"-- ping"):
        res = simple.pgconn.exec_(ping)
        assert res.status == pq.ExecStatus.EMPTY_QUERY, (ping, res.status, res.error_message)
    assert simple.pgconn.transaction_status == pq.TransactionStatus.IDLE
    assert simple.execute("SELECT 1").fetchall() == [(1,)]

    cur = simple.execute("SELECT current_setting('server_version_num')::int/100 as version")
    assert [c.name for c in cur.description] == ["version"]
    version = cur.fetchone()[0]
    assert isinstance(version, int)
    # Consistent with the server_version the server announced at startup, and modern enough for
    # Grafana (and psql/asyncpg) to use their current catalog queries.
    assert version == simple.info.server_version // 100
    assert version >= 1000

    cur = simple.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    assert [c.name for c in cur.description] == ["extversion"]
    assert cur.fetchall() == []


def test_quote_ident(simple):
    row = simple.execute(
        "SELECT quote_ident('time'), quote_ident('value'), quote_ident('host'), "
        "quote_ident('MixedCase'), quote_ident('select'), quote_ident('a b')"
    ).fetchone()
    assert row == ('"time"', "value", "host", '"MixedCase"', '"select"', '"a b"')


def test_schema_table_and_column_pickers(simple, metrics):
    assert simple.execute("SELECT current_schema()").fetchone() == ("public",)

    schemas = [r[0] for r in simple.execute(
        """SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name"""
    ).fetchall()]
    assert "public" in schemas
    assert "pg_catalog" not in schemas and "information_schema" not in schemas
    assert schemas == sorted(schemas)

    search_path_in = """
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"""
    tables = [r[0] for r in simple.execute(
        f"""SELECT
    CASE WHEN {search_path_in}
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN {search_path_in} THEN 0 ELSE 1 END, 1"""
    ).fetchall()]
    # public is on the search_path, so the name comes back unqualified.
    assert metrics in tables
    assert not any(t.startswith(("pg_catalog.", "information_schema.")) for t in tables), tables

    public = [r[0] for r in simple.execute(
        """SELECT quote_ident(table_name) AS "table"
      FROM information_schema.tables
      WHERE quote_ident(table_schema) = 'public'
      ORDER BY 1"""
    ).fetchall()]
    assert metrics in public and public == sorted(public)

    expected = sorted([
        ('"time"', "timestamp with time zone"),
        ("value", "double precision"),
        ("host", "text"),
        ("epoch", "bigint"),
    ])
    for name in (metrics, f"public.{metrics}"):
        cur = simple.execute(
            f"""SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('{name}'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('{name}'))[1]
          AND quote_ident(table_name) = (parse_ident('{name}'))[2]
        ELSE quote_ident(table_name) = '{name}'
          AND {search_path_in}
      END"""
        )
        assert [c.name for c in cur.description] == ["column", "type"]
        assert sorted(cur.fetchall()) == expected, name


def per_minute_avg():
    groups = defaultdict(list)
    for t, v, _, _ in IN_RANGE:
        groups[math.floor(t.timestamp() / 60) * 60].append(v)
    return [(k, sum(vs) / len(vs)) for k, vs in sorted(groups.items())]


def test_time_series_macro_queries(simple, metrics):
    # $__timeGroupAlias(time, 1m) + $__timeFilter(time), exactly as Grafana expands them.
    cur = simple.execute(
        f"""SELECT
  floor(extract(epoch from time)/60)*60 AS "time",
  avg(value) AS "value"
FROM {metrics}
WHERE
  time BETWEEN '{FROM}' AND '{TO}'
GROUP BY 1
ORDER BY 1"""
    )
    assert [c.name for c in cur.description] == ["time", "value"]
    got = cur.fetchall()
    want = per_minute_avg()
    assert len(want) == 5
    assert [float(r[0]) for r in got] == [float(k) for k, _ in want]
    assert [r[1] for r in got] == pytest.approx([v for _, v in want])
    assert all(isinstance(r[1], float) for r in got)

    # The same with the column quoted, as a user may write it.
    got2 = simple.execute(
        f'SELECT floor(extract(epoch from "time")/60)*60 AS "time", avg(value) FROM {metrics} '
        f"WHERE \"time\" BETWEEN '{FROM}' AND '{TO}' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [(float(a), b) for a, b in got2] == [(float(a), pytest.approx(b)) for a, b in got]

    # Multi-series: metric column from host.
    got = simple.execute(
        f"""SELECT
  floor(extract(epoch from time)/60)*60 AS "time",
  host AS metric,
  sum(value) AS value
FROM {metrics}
WHERE time BETWEEN '{FROM}' AND '{TO}'
GROUP BY 1, 2
ORDER BY 1, 2"""
    ).fetchall()
    sums = defaultdict(float)
    for t, v, h, _ in IN_RANGE:
        sums[(math.floor(t.timestamp() / 60) * 60, h)] += v
    assert [(float(a), b) for a, b, _ in got] == [(float(k[0]), k[1]) for k in sorted(sums)]
    assert [c for _, _, c in got] == pytest.approx([sums[k] for k in sorted(sums)])

    # $__unixEpochGroupAlias(epoch, 5m) + $__unixEpochFilter(epoch) on a bigint column.
    lo, hi = int(LO.timestamp()), int(HI.timestamp())
    got = simple.execute(
        f"""SELECT floor((epoch)/300)*300 AS "time", count(*) AS "count"
FROM {metrics}
WHERE epoch >= {lo} AND epoch <= {hi}
GROUP BY 1
ORDER BY 1"""
    ).fetchall()
    counts = defaultdict(int)
    for _, _, _, e in ROWS:
        if lo <= e <= hi:
            counts[e // 300 * 300] += 1
    assert [(int(a), b) for a, b in got] == sorted(counts.items())

    # Table panel: raw rows with $__timeFrom()/$__timeTo(), in UTC.
    simple.execute("SET TIME ZONE 'UTC'")
    got = simple.execute(
        f"""SELECT time AS "time", value, host
FROM {metrics}
WHERE time >= '{FROM}' AND time < '{TO}' AND host = 'b'
ORDER BY 1"""
    ).fetchall()
    want = [(t, v, h) for t, v, h, _ in ROWS if LO <= t < HI and h == "b"]
    assert got == want
    assert all(r[0].utcoffset() == dt.timedelta(0) for r in got)

    got = simple.execute(
        f"SELECT extract(epoch from time) as \"time\", value FROM {metrics} "
        f"WHERE time BETWEEN '{FROM}' AND '{TO}' AND host = 'b' ORDER BY 1"
    ).fetchall()
    want = [(t.timestamp(), v) for t, v, h, _ in IN_RANGE if h == "b"]
    assert [float(a) for a, _ in got] == pytest.approx([a for a, _ in want], abs=1e-6)
    assert [b for _, b in got] == [b for _, b in want]
    assert isinstance(got[0][0], (Decimal, float))


def test_multi_statement_query(simple, metrics):
    # lib/pq sends the panel's "SET ...; SELECT ..." as one simple Query: two results.
    cur = simple.cursor()
    cur.execute(
        f"SET TIME ZONE 'UTC'; SELECT count(*) FROM {metrics} WHERE time BETWEEN '{FROM}' AND '{TO}'"
    )
    assert cur.description is None  # SET
    assert cur.nextset()
    assert cur.fetchall() == [(len(IN_RANGE),)]
    assert simple.info.parameter_status("TimeZone") == "UTC"


# --- the Go drivers' own startup packet, on the wire ---------------------------------------------

class WireError(Exception):
    def __init__(self, fields: dict[str, str]):
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")
        self.fields = fields


class RawConn:
    """Just enough of the frontend protocol to send Query messages as lib/pq and pgx do."""

    def __init__(self, host: str, port: int, startup: dict[str, str]):
        self.sock = socket.create_connection((host, port), timeout=30)
        body = struct.pack("!i", 196608) + b"".join(
            k.encode() + b"\0" + v.encode() + b"\0" for k, v in startup.items()
        ) + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)
        self.params: dict[str, str] = {}
        self.status = b""
        while True:
            kind, payload = self._read()
            if kind == b"R":
                assert struct.unpack("!i", payload[:4])[0] == 0, "expected AuthenticationOk"
            elif kind == b"S":
                self._param(payload)
            elif kind == b"E":
                raise WireError(self._fields(payload))
            elif kind == b"Z":
                self.status = payload
                return
            # K (BackendKeyData), N (notice): ignored

    def _recv(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def _read(self) -> tuple[bytes, bytes]:
        head = self._recv(5)
        (length,) = struct.unpack("!i", head[1:])
        return head[:1], self._recv(length - 4)

    def _param(self, payload: bytes) -> None:
        k, v = payload.split(b"\0")[:2]
        self.params[k.decode()] = v.decode()

    @staticmethod
    def _fields(payload: bytes) -> dict[str, str]:
        return {f[:1].decode(): f[1:].decode() for f in payload.split(b"\0") if f}

    def query(self, sql: str) -> list[dict]:
        """Sends one Query; returns one dict per statement result until ReadyForQuery."""
        data = sql.encode() + b"\0"
        self.sock.sendall(b"Q" + struct.pack("!i", len(data) + 4) + data)
        results: list[dict] = []
        current: dict | None = None
        while True:
            kind, payload = self._read()
            if kind == b"T":
                (n,) = struct.unpack("!h", payload[:2])
                cols, pos = [], 2
                for _ in range(n):
                    end = payload.index(b"\0", pos)
                    name = payload[pos:end].decode()
                    _, _, oid, _, _, fmt = struct.unpack("!ihihih", payload[end + 1:end + 19])
                    assert fmt == 0, "simple Query results must be text"
                    cols.append((name, oid))
                    pos = end + 19
                current = {"kind": "rows", "columns": cols, "rows": []}
            elif kind == b"D":
                (n,) = struct.unpack("!h", payload[:2])
                row, pos = [], 2
                for _ in range(n):
                    (ln,) = struct.unpack("!i", payload[pos:pos + 4])
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + ln].decode())
                        pos += ln
                assert current is not None, "DataRow without RowDescription"
                current["rows"].append(row)
            elif kind == b"C":
                res = current or {"kind": "command"}
                res["tag"] = payload.rstrip(b"\0").decode()
                results.append(res)
                current = None
            elif kind == b"I":
                results.append({"kind": "empty"})
            elif kind == b"E":
                results.append({"kind": "error", "fields": self._fields(payload)})
                current = None
            elif kind == b"S":
                self._param(payload)
            elif kind == b"Z":
                self.status = payload
                return results

    def close(self) -> None:
        try:
            self.sock.sendall(b"X" + struct.pack("!i", 4))
        finally:
            self.sock.close()


@pytest.mark.parametrize("driver", ["lib/pq", "pgx"])
def test_go_driver_wire_session(weir, metrics, driver):
    startup = {"user": "weir", "database": "weir"}
    if driver == "lib/pq":
        startup.update({"extra_float_digits": "2", "client_encoding": "UTF8", "datestyle": "ISO, MDY"})
    conn = RawConn(weir.host, weir.port, startup)
    try:
        assert conn.status == b"I"
        assert conn.params.get("client_encoding") == "UTF8"
        assert conn.params.get("DateStyle", "").startswith("ISO")
        assert conn.params.get("integer_datetimes") == "on"
        assert conn.params.get("standard_conforming_strings") == "on"
        assert conn.params.get("server_version"), conn.params

        ping = ";" if driver == "lib/pq" else "-- ping"
        assert conn.query(ping) == [{"kind": "empty"}]
        assert conn.status == b"I"

        res = conn.query(
            f"""SELECT
  floor(extract(epoch from time)/60)*60 AS "time",
  avg(value) AS "value"
FROM {metrics}
WHERE
  time BETWEEN '{FROM}' AND '{TO}'
GROUP BY 1
ORDER BY 1"""
        )
        assert len(res) == 1 and res[0]["kind"] == "rows", res
        cols = res[0]["columns"]
        assert [c[0] for c in cols] == ["time", "value"]
        # Grafana converts numeric (1700) and any int/float type to its time field.
        assert cols[0][1] in (20, 21, 23, 700, 701, 1700), cols
        assert cols[1][1] == 701, cols
        want = per_minute_avg()
        assert res[0]["tag"] == f"SELECT {len(want)}"
        assert [float(r[0]) for r in res[0]["rows"]] == [float(k) for k, _ in want]
        assert [float(r[1]) for r in res[0]["rows"]] == pytest.approx([v for _, v in want])

        res = conn.query(
            f"SET TIME ZONE 'UTC'; SELECT count(*) FROM {metrics} WHERE time BETWEEN '{FROM}' AND '{TO}'"
        )
        assert [r["kind"] for r in res] == ["command", "rows"], res
        assert res[0]["tag"] == "SET"
        assert res[1]["columns"] == [("count", 20)]
        assert res[1]["rows"] == [[str(len(IN_RANGE))]] and res[1]["tag"] == "SELECT 1"
        assert conn.params["TimeZone"] == "UTC"  # ParameterStatus re-sent after SET TIME ZONE
        assert conn.status == b"I"

        # An error ends the Query with ErrorResponse + ReadyForQuery; the session goes on.
        res = conn.query("SELECT * FROM no_such_table_grafana")
        assert [r["kind"] for r in res] == ["error"] and res[0]["fields"]["C"] == "42P01"
        assert conn.status == b"I"
        assert conn.query("SELECT 1")[0]["rows"] == [["1"]]
    finally:
        conn.close()
