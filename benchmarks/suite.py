#!/usr/bin/env python3
"""Weir's benchmark suite, through Weir's public SQL interface, with peers in the same run.

Every workload starts `weir serve` (release build) with a fresh data directory, creates its
sources and views with SQL over pgwire, waits until a bounded source has ended and a FLUSH after
that returned (every window closed), checks the views' contents, and reports:

  * events/s over the wall-clock time from the first CREATE to the last window closed,
  * events per CPU-second of the server process (user + system, all threads),
  * the server's peak RSS (VmHWM) and the views' state bytes at the end,
  * for the freshness workload: p50/p99 of (wall clock - newest event time in a view), sampled
    while a rate-limited source runs,
  * for the memory workload: RSS sampled over a long rate-limited q5 run.

Workloads (--workloads, default all but `memory`):
  gen-q0 gen-q1 gen-q2 gen-q5 gen-q7 gen-q8   Nexmark from the built-in generator
  file-tumble file-hop file-q7                Nexmark bids from Parquet files (weir generate-nexmark)
  chat                                        chat analytics from datagen
  kafka-json                                  JSON chat messages from a Kafka topic into a TUMBLE
                                              view, next to decoding the same messages alone
                                              (`weir bench-json-decode`); needs a broker:
                                              --kafka-brokers or $WEIR_KAFKA_BROKERS
  sink-clickhouse                             Nexmark bids through a sink of its own query into a
                                              ClickHouse table Weir creates; rows/s delivered (needs
                                              --clickhouse-url or $WEIR_CLICKHOUSE_URL)
  sink-ilp-http sink-ilp-tcp                  the same bids through the QuestDB sink (ILP over HTTP or
                                              TCP) into a receiver in this script that counts lines:
                                              Weir's side of the delivery, not a database's
  scan                                        a 1M-row view read whole over Arrow Flight SQL (ADBC)
                                              and over pgwire (asyncpg, binary results): rows/s and
                                              MB/s each
  freshness                                   q5 core at a fixed rate, freshness percentiles
  memory                                      q5 rate-limited for --memory-seconds, RSS over time

With --peers, the file workloads also run on the engines installed by benchmarks/peers/install.sh
(Flink and Spark streaming, DataFusion and DuckDB batch) over the same files, results are
compared by checksum, and Weir/peer ratios are reported.

Usage:
    benchmarks/suite.py --weir target/release/weir [--events 10000000] [--peers] [--record]
    benchmarks/suite.py --weir target/debug/weir --smoke      # tiny sizes, checks only
"""

import argparse
import datetime
import http.server
import json
import os
import platform
import re
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_TIME = "2026-01-01 00:00:00"

# The columns the queries read: Parquet decodes only declared columns (as DataFusion and DuckDB
# decode only the columns a query reads).
BID_COLUMNS = """auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
    WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND"""


def gen_source(name, table, events, columns):
    return f"""CREATE SOURCE {name} ({columns}, date_time TIMESTAMP,
        WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
        WITH (connector = 'nexmark', nexmark.table.type = '{table}',
        nexmark.event.num = '{events}', nexmark.max.chunk.size = '8192',
        nexmark.base.time = '1700000000000', watermark.idle_timeout = '0')"""


def gen_bid_source(events):
    # Declared columns: the generator skips the strings nobody reads.
    return f"""CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
        WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
        WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '{events}',
              nexmark.max.chunk.size = '8192', nexmark.base.time = '1700000000000',
              watermark.idle_timeout = '0')"""


def file_source(data_dir):
    return f"""CREATE SOURCE bid ({BID_COLUMNS}) WITH (connector = 'file',
        path = '{data_dir}/parquet', watermark.idle_timeout = '0') FORMAT PLAIN ENCODE PARQUET"""


Q5 = """CREATE MATERIALIZED VIEW q5 AS
    SELECT a.auction, a.num, a.window_start, a.window_end
    FROM (SELECT auction, count(*) AS num, window_start, window_end
          FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
          GROUP BY auction, window_start, window_end) a
    JOIN (SELECT max(c.num) AS maxn, c.window_start, c.window_end
          FROM (SELECT count(*) AS num, window_start, window_end
                FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
                GROUP BY auction, window_start, window_end) c
          GROUP BY c.window_start, c.window_end) m
    ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.num >= m.maxn
    EMIT ON WINDOW CLOSE"""

Q7 = """CREATE MATERIALIZED VIEW q7 AS
    SELECT b.auction, b.price, b.bidder, b.date_time
    FROM bid b
    JOIN (SELECT max(price) AS maxprice, window_end AS date_time
          FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_end) b1
    ON b.price = b1.maxprice
    WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time"""

# q7 over the files, as the peers run it: a bid belongs to [window_start, window_end).
Q7_FILES = Q7.replace("WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time",
                      "WHERE b.date_time >= b1.date_time - INTERVAL '10' SECOND AND b.date_time < b1.date_time")

TUMBLE = """CREATE MATERIALIZED VIEW tumble AS
    SELECT auction, window_start, count(*) AS cnt, sum(price) AS sum_price, max(price) AS max_price
    FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start
    EMIT ON WINDOW CLOSE"""

HOP = """CREATE MATERIALIZED VIEW hop AS
    SELECT auction, window_start, count(*) AS cnt
    FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start
    EMIT ON WINDOW CLOSE"""

Q8 = """CREATE MATERIALIZED VIEW q8 AS
    SELECT p.id, p.name, p.window_start AS starttime
    FROM (SELECT id, name, window_start, window_end
          FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
          GROUP BY id, name, window_start, window_end) p
    JOIN (SELECT seller, window_start, window_end
          FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
          GROUP BY seller, window_start, window_end) a
    ON p.id = a.seller AND p.window_start = a.window_start AND p.window_end = a.window_end
    EMIT ON WINDOW CLOSE"""

CHAT_SOURCE = """CREATE SOURCE chat (stream_id VARCHAR, user_id VARCHAR, ts TIMESTAMP,
        WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
    WITH (connector = 'datagen', datagen.rows.per.second = '0', datagen.max.rows = '{rows}',
          datagen.split.num = '2', watermark.idle_timeout = '0',
          fields.stream_id.kind = 'random', fields.stream_id.values = '{streams}',
          fields.user_id.kind = 'random', fields.user_id.values = '{users}',
          fields.ts.kind = 'event_time', fields.ts.start = '2026-01-01 00:00:00',
          fields.ts.step = '{step}', fields.ts.disorder = '2s')"""

CHAT_HOP = """CREATE MATERIALIZED VIEW chat_hop AS
    SELECT stream_id, window_start, count(*) AS messages
    FROM HOP(chat, ts, INTERVAL '10' SECOND, INTERVAL '60' SECOND)
    GROUP BY stream_id, window_start EMIT ON WINDOW CLOSE"""


def nexmark_bids(events):
    """Bids among the first `events` Nexmark events (the 1:3:46 person:auction:bid mix)."""
    return events // 50 * 46 + max(0, min(events % 50 - 4, 46))


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, hwm, rss


class Weir:
    """A `weir serve` process with a fresh data directory, and a connection to it."""

    def __init__(self, binary, flags=(), data_dir=None):
        """`data_dir`: reuse a directory (a restart); otherwise a fresh temporary one."""
        self.binary, self.flags = binary, list(flags)
        self.dir = tempfile.TemporaryDirectory() if data_dir is None else None
        self.data_dir = data_dir or self.dir.name
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [binary, "serve", "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--flight-addr", "127.0.0.1:0",
             "--data-dir", self.data_dir, *self.flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "WEIR_LOG": "warn"},
        )
        line = self.proc.stdout.readline()
        m = re.search(r"pg=([\d.]+):(\d+) .*flight=([\d.]+:\d+)", line)
        if not m:
            self.proc.kill()
            sys.exit(f"weir did not start: {line!r}")
        self.pg_host, self.pg_port, self.flight_addr = m.group(1), int(m.group(2)), m.group(3)
        self.conn = psycopg.connect(host=self.pg_host, port=self.pg_port, user="weir", dbname="weir", autocommit=True)

    def one(self, sql):
        return self.conn.execute(sql).fetchone()[0]

    def stats(self):
        return proc_stats(self.proc.pid)

    def wait_ended(self, sources):
        """Until every source ended and a FLUSH after that returned: every window closed."""
        while True:
            self.conn.execute("FLUSH")
            names = ",".join(f"'{s}'" for s in sources)
            if self.one(f"SELECT bool_and(ended) FROM weir_catalog.sources WHERE name IN ({names})"):
                self.conn.execute("FLUSH")
                return
            time.sleep(0.05)

    def kill9(self):
        """SIGKILL, keeping the data directory (for a restart with `Weir(..., data_dir=...)`)."""
        self.conn.close()
        self.proc.kill()
        self.proc.wait(timeout=30)

    def close(self):
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if self.dir is not None:
            self.dir.cleanup()


def fail(workload, message):
    sys.exit(f"{workload}: CHECK FAILED: {message}")


def checksum(weir, view, query):
    """The same checksum as benchmarks/peers/run_peer.py computes, over Weir's view."""
    epoch = "CAST(extract(epoch FROM window_start) AS BIGINT)"
    if query == "tumble":
        r = weir.conn.execute(f"SELECT count(*), sum(cnt), sum(sum_price), sum(max_price), sum({epoch}) FROM {view}").fetchone()
        keys = ["rows", "sum_cnt", "sum_sum_price", "sum_max_price", "sum_window_start_epoch_seconds"]
    elif query == "hop":
        r = weir.conn.execute(f"SELECT count(*), sum(cnt), sum({epoch}) FROM {view}").fetchone()
        keys = ["rows", "sum_cnt", "sum_window_start_epoch_seconds"]
    else:
        r = weir.conn.execute(f"SELECT count(*), sum(price), sum(auction) FROM {view}").fetchone()
        keys = ["rows", "sum_price", "sum_auction"]
    return {k: int(v or 0) for k, v in zip(keys, r)}


def run_batch_workload(args, name, sources, views, events, counted, check, flags=()):
    """Creates sources and views, waits for the end, checks, measures."""
    weir = Weir(args.weir, flags)
    try:
        cpu0, _, _ = weir.stats()
        t0 = time.monotonic()
        for sql in sources + views:
            weir.conn.execute(sql)
        source_names = [re.search(r"CREATE SOURCE (\w+)", s).group(1) for s in sources]
        weir.wait_ended(source_names)
        wall = time.monotonic() - t0
        cpu1, hwm, _ = weir.stats()
        state = weir.one("SELECT coalesce(sum(state_bytes), 0) FROM weir_catalog.materialized_views")
        result = {
            "workload": name,
            "events": events,
            "counted": counted,
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "per_s": round(events / wall),
            "per_cpu_s": round(events / max(cpu1 - cpu0, 1e-9)),
            "peak_rss_mb": round(hwm / 2**20, 1),
            "state_mb": round(state / 2**20, 2),
        }
        result.update(check(weir) or {})
        return result
    finally:
        weir.close()


def checkpoint_after(weir, epoch):
    """The first checkpoint written after `epoch`: (epoch, bytes written, duration in ms)."""
    while True:
        row = weir.conn.execute("SELECT epoch, bytes_written, duration_ms FROM weir_catalog.checkpoints "
                                "WHERE epoch > %s ORDER BY epoch LIMIT 1", (epoch,)).fetchone()
        if row:
            return row
        time.sleep(0.1)


def checkpoint_workload(args):
    """Checkpoints: their cost on Nexmark q5 (CPU per bid with checkpoints off, at the default
    10 s and at 1 s), and for a view of G groups (G = each of --checkpoint-groups) the duration
    and size of a checkpoint and the time a restart after kill -9 takes to bring the view back."""
    result = {"workload": "checkpoint"}
    q5 = {}
    for label, interval in (("off", 0), ("10s", 10_000), ("1s", 1_000)):
        bids = nexmark_bids(args.events)
        r = run_batch_workload(args, f"gen-q5-checkpoints-{label}", [gen_bid_source(args.events)], [Q5], bids, "bids",
                               lambda weir: None, flags=["--checkpoint-interval-ms", str(interval)])
        q5[label] = r["per_cpu_s"]
        result[f"q5_per_cpu_s_checkpoints_{label}"] = r["per_cpu_s"]
    result["q5_overhead_10s"] = round(1 - q5["10s"] / q5["off"], 3)
    result["q5_overhead_1s"] = round(1 - q5["1s"] / q5["off"], 3)
    groups = []
    for g in [int(x) for x in args.checkpoint_groups.split(",")]:
        data = tempfile.TemporaryDirectory()
        flags = ["--checkpoint-interval-ms", "2000"]
        weir = Weir(args.weir, flags, data_dir=data.name)
        try:
            weir.conn.execute(f"""CREATE SOURCE g (k BIGINT, v BIGINT) WITH (connector = 'datagen',
                datagen.rows.per.second = '0', datagen.max.rows = '{g}', datagen.max.chunk.size = '8192',
                fields.k.kind = 'sequence', fields.k.start = '1', fields.v.kind = 'random', fields.v.max = '1000')""")
            weir.conn.execute("CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s, max(v) AS m FROM g GROUP BY k")
            weir.wait_ended(["g"])
            ended_epoch = weir.one("SELECT max(last_epoch) FROM weir_catalog.materialized_views")
            # Wait for a checkpoint holding every row (a full snapshot and the changes after it).
            checkpoint_after(weir, ended_epoch - 1)
            _, hwm, _ = weir.stats()
            weir.kill9()
            restarted = Weir(args.weir, flags, data_dir=data.name)
            ready_s = time.monotonic() - restarted.started
            rows = restarted.one("SELECT count(*) FROM per_k")
            total = time.monotonic() - restarted.started
            if rows != g:
                fail("checkpoint", f"the recovered view has {rows} groups, expected {g}")
            # After a restart the first checkpoint holds every group in full; the next, with
            # nothing changed since, only the changes: what a checkpoint costs in a steady state.
            full = checkpoint_after(restarted, 0)
            steady = checkpoint_after(restarted, full[0])
            _, hwm_restarted, _ = restarted.stats()
            restarted.close()
            groups.append({"groups": g, "checkpoint_mb": round(full[1] / 2**20, 1), "checkpoint_ms": full[2],
                           "steady_checkpoint_mb": round(steady[1] / 2**20, 3), "steady_checkpoint_ms": steady[2],
                           "recovery_ready_s": round(ready_s, 2), "recovery_s": round(total, 2),
                           "peak_rss_mb": round(max(hwm, hwm_restarted) / 2**20, 1)})
        finally:
            data.cleanup()
    result["groups"] = groups
    return result


def gen_workload(args, query):
    events = args.small_events if query in ("q0", "q1", "q2") else args.events
    bids = nexmark_bids(events)

    def read_all(weir, source="bid", expected=bids):
        read = weir.one(f"SELECT rows_read FROM weir_catalog.sources WHERE name = '{source}'")
        if read != expected:
            fail(f"gen-{query}", f"the source read {read} rows, expected {expected}")

    if query in ("q0", "q1"):
        # Pass-through (q0) and currency conversion (q1): the view keeps every bid.
        price = "price" if query == "q0" else "0.908 * price AS price"
        views = [f"CREATE MATERIALIZED VIEW {query} AS SELECT auction, bidder, {price}, date_time FROM bid"]

        def check(weir):
            read_all(weir)
            if weir.one(f"SELECT count(*) FROM {query}") != bids:
                fail(f"gen-{query}", "the view does not hold every bid")
    elif query == "q2":
        views = ["CREATE MATERIALIZED VIEW q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0"]

        def check(weir):
            read_all(weir)
            if weir.one("SELECT count(*) FROM q2 WHERE auction % 123 <> 0") != 0 or weir.one("SELECT count(*) FROM q2") == 0:
                fail("gen-q2", "the filter is wrong")
    elif query == "q5":
        views = [Q5]

        def check(weir):
            read_all(weir)
            windows = weir.one("SELECT count(DISTINCT window_start) FROM q5")
            ties = weir.one("SELECT count(*) FROM (SELECT window_start FROM q5 GROUP BY window_start "
                            "HAVING min(num) <> max(num)) t")
            if windows == 0 or ties:
                fail("gen-q5", f"{windows} windows, {ties} with unequal winners")
            return {"result_rows": weir.one("SELECT count(*) FROM q5")}
    elif query == "q7":
        views = [Q7]

        def check(weir):
            read_all(weir)
            rows = weir.one("SELECT count(*) FROM q7")
            if rows == 0:
                fail("gen-q7", "no highest bids")
            return {"result_rows": rows}
    elif query == "q8":
        person = gen_source("person", "Person", events, "id BIGINT, name VARCHAR")
        auction = gen_source("auction", "Auction", events, "seller BIGINT")
        # Every person and auction kept, for the batch recomputation of q8 (8% of the events).
        keep = ["CREATE MATERIALIZED VIEW persons_all AS SELECT id, name, date_time FROM person",
                "CREATE MATERIALIZED VIEW auctions_all AS SELECT seller, date_time FROM auction"]

        def check(weir):
            rows = weir.one("SELECT count(*) FROM q8")
            ten_s = "date_bin(INTERVAL '10 seconds', {}, TIMESTAMP '1970-01-01 00:00:00')"
            batch = weir.one(f"""SELECT count(*) FROM (SELECT DISTINCT p.id, p.name, {ten_s.format('p.date_time')}
                FROM persons_all p JOIN auctions_all a ON p.id = a.seller
                AND {ten_s.format('p.date_time')} = {ten_s.format('a.date_time')}) t""")
            if rows == 0 or rows != batch:
                fail("gen-q8", f"{rows} new sellers, {batch} in the batch recomputation")
            return {"result_rows": rows}
        return run_batch_workload(args, "gen-q8", [person, auction], [Q8] + keep, events,
                                  "events (persons and auctions of the mix)", check)
    return run_batch_workload(args, f"gen-{query}", [gen_bid_source(events)], views, bids, "bids", check)


def file_workload(args, query, data_dir, bids):
    view = {"tumble": TUMBLE, "hop": HOP, "q7": Q7_FILES}[query]
    name = "q7" if query == "q7" else query

    def check(weir):
        read = weir.one("SELECT rows_read FROM weir_catalog.sources WHERE name = 'bid'")
        late = weir.one("SELECT late_rows FROM weir_catalog.sources WHERE name = 'bid'")
        if read != bids or late:
            fail(f"file-{query}", f"read {read} bids ({late} late), expected {bids}")
        return {"checksum": checksum(weir, name, query)}

    return run_batch_workload(args, f"file-{query}", [file_source(data_dir)], [view], bids, "bids", check)


def chat_workload(args):
    rows = args.chat_rows
    # 200 live streams, 2000 chatters, 100 messages per second of event time.
    streams = ",".join(f"stream{i}" for i in range(200))
    users = ",".join(f"user{i}" for i in range(2000))
    source = CHAT_SOURCE.format(rows=rows, step="10ms", streams=streams, users=users)
    example = open(os.path.join(HERE, "..", "examples", "chat.sql")).read()
    example = re.sub(r"^\s*--.*$", "", example, flags=re.M)
    views = [s.strip() for s in example.split(";") if s.strip().startswith("CREATE MATERIALIZED VIEW")] + [CHAT_HOP]

    def check(weir):
        if weir.one("SELECT rows_read FROM weir_catalog.sources WHERE name = 'chat'") != rows:
            fail("chat", "the source did not read every message")
        late = weir.one("SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'")
        per_min = weir.one("SELECT sum(messages) FROM chat_per_min")
        if per_min + late != rows:
            fail("chat", f"per-minute counts {per_min} + late {late} != {rows}")
        hop = weir.one("SELECT sum(messages) FROM chat_hop")
        if hop != 6 * (rows - late):
            fail("chat", f"HOP 60s/10s holds {hop} messages, expected 6 x {rows - late}")
        # The z-score view against the same query in batch over the per-minute view.
        streamed = weir.conn.execute(
            "SELECT stream_id, window_start, messages, mean_10m FROM chat_zscore ORDER BY 1, 2").fetchall()
        batch = weir.conn.execute(
            "SELECT cur.stream_id, cur.window_start, cur.messages, avg(prev.messages) FROM chat_per_min cur "
            "JOIN chat_per_min prev ON prev.stream_id = cur.stream_id AND prev.window_start BETWEEN "
            "cur.window_start - INTERVAL '10' MINUTE AND cur.window_start - INTERVAL '1' MINUTE "
            "GROUP BY cur.stream_id, cur.window_start, cur.messages ORDER BY 1, 2").fetchall()
        if len(streamed) != len(batch) or any(
                s[:3] != b[:3] or abs(s[3] - b[3]) > 1e-9 * max(1.0, abs(b[3])) for s, b in zip(streamed, batch)):
            fail("chat", f"chat_zscore ({len(streamed)} rows) differs from its batch recomputation ({len(batch)} rows)")
        return {"late_rows": late, "zscore_rows": len(streamed)}

    return run_batch_workload(args, "chat", [source], views, rows, "messages", check)


KAFKA_CHAT_SOURCE = """CREATE SOURCE chat (
    stream_id VARCHAR, user_id VARCHAR, message VARCHAR, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{brokers}',
        scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON"""

KAFKA_CHAT_VIEW = """CREATE MATERIALIZED VIEW chat_10s AS
SELECT stream_id, window_start, count(*) AS messages
FROM TUMBLE(chat, ts, INTERVAL '10' SECOND) GROUP BY stream_id, window_start"""


def kafka_json_workload(args):
    """Kafka JSON -> TUMBLE view, in rows per CPU-second of the server, next to one core decoding
    the same messages with the same decoder and nothing else (the ceiling)."""
    brokers = args.kafka_brokers or os.environ.get("WEIR_KAFKA_BROKERS")
    if not brokers:
        print("kafka-json: skipped: no broker (--kafka-brokers or WEIR_KAFKA_BROKERS; "
              "`source tests/services.sh && start_kafka` starts one)", file=sys.stderr)
        return None
    rows = args.kafka_rows
    suffix = f"{os.getpid()}_{int(time.time())}"
    topic = f"bench_chat_{suffix}"
    subprocess.run([args.weir, "produce-chat", "--brokers", brokers, "--rate", "0", "--messages", str(rows),
                    "--streams", "8", "--partitions", "2", "--chat-topic", topic,
                    "--viewer-topic", f"bench_viewer_{suffix}"], check=True, stdout=subprocess.DEVNULL)
    decode = json.loads(subprocess.run([args.weir, "bench-json-decode", "--brokers", brokers, "--topic", topic,
                                        "--messages", str(rows)], check=True, capture_output=True, text=True).stdout)
    weir = Weir(args.weir)
    try:
        cpu0, _, _ = weir.stats()
        t0 = time.monotonic()
        weir.conn.execute(KAFKA_CHAT_SOURCE.format(topic=topic, brokers=brokers))
        weir.conn.execute(KAFKA_CHAT_VIEW)
        # Every poll is a query the server pays for in CPU; 20 a second is plenty to see the end.
        while weir.one("SELECT rows_read FROM weir_catalog.sources WHERE name = 'chat'") < rows:
            time.sleep(0.05)
        weir.conn.execute("FLUSH")
        wall = time.monotonic() - t0
        cpu1, hwm, _ = weir.stats()
        read = weir.one("SELECT rows_read FROM weir_catalog.sources WHERE name = 'chat'")
        errors = weir.one("SELECT errors FROM weir_catalog.sources WHERE name = 'chat'")
        late = weir.one("SELECT late_rows FROM weir_catalog.sources WHERE name = 'chat'")
        counted = weir.one("SELECT coalesce(sum(messages), 0) FROM chat_10s")
        if read != rows or errors or counted + late != rows:
            fail("kafka-json", f"read {read} of {rows} messages ({errors} bad, {late} late), the view counts {counted}")
        per_cpu_s = round(rows / max(cpu1 - cpu0, 1e-9))
        return {
            "workload": "kafka-json",
            "events": rows,
            "counted": "messages",
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "per_s": round(rows / wall),
            "per_cpu_s": per_cpu_s,
            "peak_rss_mb": round(hwm / 2**20, 1),
            "state_mb": round(weir.one("SELECT coalesce(sum(state_bytes), 0) FROM weir_catalog.materialized_views") / 2**20, 2),
            "message_bytes": decode["bytes"],
            "decode_only_per_s": decode["per_s"],
            "share_of_decode": round(per_cpu_s / decode["per_s"], 3),
            "late_rows": late,
        }
    finally:
        weir.close()


class LineCounter:
    """A line-protocol endpoint that only counts lines: over TCP (QuestDB's 9009 protocol), or
    over HTTP (`POST /write`, answered 204; `/settings` answered 404, so the client speaks ILP
    v1 as it would to an older QuestDB)."""

    def __init__(self, protocol):
        self.lines = 0
        self.requests = 0
        self.lock = threading.Lock()
        counter = self

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                while True:
                    data = self.request.recv(1 << 20)
                    if not data:
                        return
                    with counter.lock:
                        counter.lines += data.count(b"\n")

        class Http(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with counter.lock:
                    counter.lines += body.count(b"\n")
                    counter.requests += 1
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        if protocol == "tcp":
            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Tcp)
        else:
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Http)
        self.server.daemon_threads = True
        self.addr = "%s:%d" % self.server.server_address
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def clickhouse_query(url, sql):
    # POST: ClickHouse runs GET requests read-only.
    with urllib.request.urlopen(url + "/", data=sql.encode(), timeout=60) as r:
        return r.read().decode()


SINK_QUERY = "SELECT auction, bidder, price, date_time FROM bid"


def sink_workload(args, target):
    """Nexmark bids through `CREATE SINK ... AS SELECT` (every bid a row, append-only) to a
    target: rows/s from the sink's creation to the last row delivered, rows per CPU-second of
    the server (generating, the view and the sink's encoding and sending), peak RSS, and the
    sink's lag (how long the oldest undelivered epoch waited) sampled while it runs."""
    events = args.sink_rows * 50 // 46
    rows = nexmark_bids(events)
    batch = args.sink_batch_rows
    counter = None
    table = f"bench_bids_{os.getpid()}_{int(time.time())}"
    if target == "clickhouse":
        url = args.clickhouse_url or os.environ.get("WEIR_CLICKHOUSE_URL")
        if not url:
            print("sink-clickhouse: skipped: no ClickHouse (--clickhouse-url or WEIR_CLICKHOUSE_URL; "
                  "`source tests/services.sh && start_clickhouse` starts one)", file=sys.stderr)
            return None
        options = (f"connector = 'clickhouse', clickhouse.url = '{url}', clickhouse.table = '{table}', "
                   f"clickhouse.create_table = 'true'")
    else:
        protocol = target.rsplit("-", 1)[1]
        counter = LineCounter(protocol)
        options = (f"connector = 'questdb', questdb.protocol = '{protocol}', questdb.addr = '{counter.addr}', "
                   f"questdb.table = '{table}', questdb.designated_timestamp = 'date_time'")
    weir = Weir(args.weir)
    try:
        cpu0, _, _ = weir.stats()
        t0 = time.monotonic()
        weir.conn.execute(gen_bid_source(events))
        weir.conn.execute(f"CREATE SINK s AS {SINK_QUERY} WITH ({options}, sink.batch.rows = '{batch}')")
        # Done when the target has every row (the sink counts change rows, and identical bids
        # are one change of multiplicity 2); then a moment more to see that no row follows.
        def landed():
            if target == "clickhouse":
                return int(clickhouse_query(url, f"SELECT count() FROM {table}").strip())
            return counter.lines
        lags = []
        deadline = time.monotonic() + 3600
        while True:
            lag, status = weir.conn.execute("SELECT lag_ms, status FROM weir_catalog.sinks WHERE name = 's'").fetchone()
            lags.append(lag)
            arrived = landed()
            if arrived >= rows:
                break
            if status.startswith("failed") or time.monotonic() > deadline:
                fail(f"sink-{target}", f"{arrived} of {rows} rows arrived, status {status}")
            time.sleep(0.05)
        wall = time.monotonic() - t0
        cpu1, hwm, _ = weir.stats()
        batches = weir.one("SELECT batches FROM weir_catalog.sinks WHERE name = 's'")
        time.sleep(1)
        arrived = landed()
        if target == "clickhouse":
            clickhouse_query(url, f"DROP TABLE {table}")
        if arrived != rows:
            fail(f"sink-{target}", f"{arrived} rows arrived, {rows} expected")
        return {
            "workload": f"sink-{target}",
            "events": rows,
            "counted": "rows",
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "per_s": round(rows / wall),
            "per_cpu_s": round(rows / max(cpu1 - cpu0, 1e-9)),
            "peak_rss_mb": round(hwm / 2**20, 1),
            "state_mb": round(weir.one("SELECT coalesce(sum(state_bytes), 0) FROM weir_catalog.materialized_views") / 2**20, 2),
            "batch_rows": batch,
            "batches": batches,
            "lag_p50_ms": round(percentile(lags, 50), 1),
            "lag_p99_ms": round(percentile(lags, 99), 1),
        }
    finally:
        weir.close()
        if counter:
            counter.close()


def pgwire_binary_scan(host, port, query):
    """Reads a query's result over pgwire with binary result columns (extended protocol: Parse,
    Bind with result format 1, Execute, Sync) from a raw socket, without decoding the rows: the
    server's pgwire rate, not a client library's. Returns (rows, bytes received)."""
    import socket
    import struct

    def message(kind, body):
        return kind + struct.pack("!i", len(body) + 4) + body

    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    startup = struct.pack("!i", 196608) + b"user\0weir\0database\0weir\0\0"
    sock.sendall(struct.pack("!i", len(startup) + 4) + startup)
    buf = b""
    while not buf.endswith(b"Z\0\0\0\x05I"):  # ReadyForQuery after the startup
        buf += sock.recv(65536)
    q = query.encode() + b"\0"
    sock.sendall(message(b"P", b"\0" + q + b"\0\0")
                 + message(b"B", b"\0\0" + b"\0\0" + b"\0\0" + b"\0\x01\0\x01")
                 + message(b"E", b"\0\0\0\0\0") + message(b"S", b""))
    received, tail = 0, b""
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("pgwire scan: the connection closed")
        received += len(chunk)
        tail = (tail + chunk)[-256:]
        if tail.endswith(b"Z\0\0\0\x05I"):
            break
    sock.close()
    m = re.search(rb"SELECT (\d+)\0", tail)
    if not m:
        raise RuntimeError(f"pgwire scan: no command tag in {tail!r}")
    return int(m.group(1)), received


def scan_workload(args):
    """A view of `--scan-rows` Nexmark bids (every column, strings included) read whole, several
    times, over Arrow Flight SQL (the ADBC driver into a pyarrow Table) and over pgwire with
    binary results (a raw-socket reader that does not decode the rows, and asyncpg, which does,
    into Python rows): rows/s, and MB/s of Arrow data (Flight) or of bytes on the wire (pgwire).
    The best of `--scan-repeats` runs each."""
    import asyncio

    import adbc_driver_flightsql.dbapi as flight_sql
    import asyncpg

    rows = args.scan_rows
    events = rows * 50 // 46 + 50
    want = nexmark_bids(events)
    weir = Weir(args.weir)
    try:
        weir.conn.execute(f"""CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
            url VARCHAR, date_time TIMESTAMP, extra VARCHAR,
            WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
            WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '{events}',
                  nexmark.max.chunk.size = '8192', nexmark.base.time = '1700000000000',
                  watermark.idle_timeout = '0')""")
        weir.conn.execute("CREATE MATERIALIZED VIEW scan AS SELECT * FROM bid")
        weir.wait_ended(["bid"])
        if weir.one("SELECT count(*) FROM scan") != want:
            fail("scan", f"the view has {weir.one('SELECT count(*) FROM scan')} rows, {want} expected")
        query = "SELECT * FROM scan"

        def best(read):
            """(seconds, bytes, server CPU-seconds) of the fastest of the runs; every run must
            return every row. Client and server share the machine's cores: the server's CPU
            time per scan says what each protocol costs Weir, apart from the client's work."""
            runs = []
            for _ in range(args.scan_repeats):
                cpu0, t0 = weir.stats()[0], time.monotonic()
                n, size = read()
                runs.append((time.monotonic() - t0, size, weir.stats()[0] - cpu0))
                if n != want:
                    fail("scan", f"a scan returned {n} rows, {want} expected")
            return min(runs)

        with flight_sql.connect(f"grpc://{weir.flight_addr}", autocommit=True) as conn:
            def flight_read():
                with conn.cursor() as cur:
                    cur.execute(query)
                    table = cur.fetch_arrow_table()
                return table.num_rows, table.nbytes
            f_wall, f_bytes, f_cpu = best(flight_read)

        r_wall, r_bytes, r_cpu = best(lambda: pgwire_binary_scan(weir.pg_host, weir.pg_port, query))

        async def asyncpg_read():
            conn = await asyncpg.connect(host=weir.pg_host, port=weir.pg_port, user="weir", database="weir")
            try:
                return len(await conn.fetch(query)), 0
            finally:
                await conn.close()
        a_wall, _, a_cpu = best(lambda: asyncio.run(asyncpg_read()))
        _, hwm, _ = weir.stats()
        mb = 2**20
        return {
            "workload": "scan",
            "rows": want,
            "flight_s": round(f_wall, 3),
            "flight_rows_per_s": round(want / f_wall),
            "flight_arrow_mb": round(f_bytes / mb, 1),
            "flight_mb_per_s": round(f_bytes / mb / f_wall, 1),
            "flight_server_cpu_s": round(f_cpu, 3),
            "pgwire_raw_s": round(r_wall, 3),
            "pgwire_raw_rows_per_s": round(want / r_wall),
            "pgwire_wire_mb": round(r_bytes / mb, 1),
            "pgwire_raw_mb_per_s": round(r_bytes / mb / r_wall, 1),
            "pgwire_raw_server_cpu_s": round(r_cpu, 3),
            "pgwire_asyncpg_s": round(a_wall, 3),
            "pgwire_asyncpg_rows_per_s": round(want / a_wall),
            "pgwire_asyncpg_server_cpu_s": round(a_cpu, 3),
            # Against the faster pgwire reader: the server's pgwire rate, not asyncpg's decoding.
            "flight_over_pgwire": round(min(r_wall, a_wall) / f_wall, 1),
            "peak_rss_mb": round(hwm / mb, 1),
        }
    finally:
        weir.close()


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def freshness_workload(args, seconds=None, q5=False):
    """A rate-limited source whose event time follows the wall clock; samples how far the newest
    event a view reflects is behind the wall clock."""
    seconds = seconds or args.freshness_seconds
    rate = args.freshness_rate
    # nexmark.first.event.rate = events/s of event time; bids are 46/50 of the events.
    event_rate = int(rate * 50 / 46)
    weir = Weir(args.weir)
    try:
        now_ms = int(time.time() * 1000)
        weir.conn.execute(f"""CREATE SOURCE bid (auction BIGINT, price BIGINT, date_time TIMESTAMP,
            WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
            WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.rows.per.second = '{rate}',
                  nexmark.first.event.rate = '{event_rate}', nexmark.base.time = '{now_ms}',
                  nexmark.max.chunk.size = '1024')""")
        weir.conn.execute("CREATE MATERIALIZED VIEW newest AS SELECT max(date_time) AS newest, count(*) AS n FROM bid")
        weir.conn.execute(Q5 if q5 else HOP)
        lags, rss = [], []
        cpu0, _, _ = weir.stats()
        t_end = time.monotonic() + seconds
        next_rss = 0.0
        while time.monotonic() < t_end:
            newest = weir.one("SELECT newest FROM newest")
            if newest is not None:
                lag_ms = (datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - newest).total_seconds() * 1000
                lags.append(lag_ms)
            if time.monotonic() >= next_rss:
                rss.append(round(weir.stats()[2] / 2**20, 1))
                next_rss = time.monotonic() + max(1.0, seconds / 60)
            time.sleep(0.01)
        cpu1, hwm, _ = weir.stats()
        n = weir.one("SELECT n FROM newest")
        # The first seconds include start-up; measure the steady state.
        steady = lags[len(lags) // 5:] or lags
        return {
            "workload": "memory" if q5 else "freshness",
            "rate_bids_per_s": rate,
            "seconds": seconds,
            "bids": n,
            "cpu_share": round((cpu1 - cpu0) / seconds, 3),
            "freshness_p50_ms": round(percentile(steady, 50), 1),
            "freshness_p99_ms": round(percentile(steady, 99), 1),
            "freshness_max_ms": round(max(steady), 1),
            "samples": len(steady),
            "peak_rss_mb": round(hwm / 2**20, 1),
            "rss_mb_over_time": rss,
        }
    finally:
        weir.close()


def run_peers(args, data_dir, query, parallelism):
    """Runs benchmarks/peers/run_peer.py for every installed engine; returns their results."""
    peers_dir = os.environ.get("WEIR_PEERS_DIR", os.path.expanduser("~/.cache/weir-peers"))
    venvs = {"flink": "flink", "spark": "spark", "datafusion": "batch", "duckdb": "batch"}
    out = []
    for engine, venv in venvs.items():
        python = os.path.join(peers_dir, venv, "bin", "python")
        if not os.path.exists(python):
            print(f"  {engine}: not installed (benchmarks/peers/install.sh)", file=sys.stderr)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [python, os.path.join(HERE, "peers", "run_peer.py"), "--engine", engine, "--query", query,
                   "--data", data_dir, "--parallelism", str(parallelism), "--out", f.name]
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                print(f"  {engine} {query} P={parallelism} failed: {proc.stderr[-2000:]}", file=sys.stderr)
                continue
            result = json.load(open(f.name))
        out.append(result)
    return out


def fmt(n):
    return f"{n:,}" if isinstance(n, int) else str(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--events", type=int, default=10_000_000, help="Nexmark events per workload")
    ap.add_argument("--small-events", type=int, default=2_000_000, help="events for q0-q2 (every bid kept in the view)")
    ap.add_argument("--chat-rows", type=int, default=5_000_000)
    ap.add_argument("--kafka-rows", type=int, default=2_000_000, help="messages for kafka-json")
    ap.add_argument("--kafka-brokers", default=None, help="broker for kafka-json (default: $WEIR_KAFKA_BROKERS)")
    ap.add_argument("--sink-rows", type=int, default=2_000_000, help="rows for the sink workloads")
    ap.add_argument("--sink-batch-rows", type=int, default=100_000, help="sink.batch.rows of the sink workloads")
    ap.add_argument("--clickhouse-url", default=None, help="ClickHouse for sink-clickhouse (default: $WEIR_CLICKHOUSE_URL)")
    ap.add_argument("--scan-rows", type=int, default=1_000_000, help="rows of the scan workload's view")
    ap.add_argument("--scan-repeats", type=int, default=5, help="scans per protocol (the fastest counts)")
    ap.add_argument("--freshness-rate", type=int, default=100_000)
    ap.add_argument("--freshness-seconds", type=int, default=30)
    ap.add_argument("--memory-seconds", type=int, default=600)
    ap.add_argument("--checkpoint-groups", default="1000000,10000000", help="group counts of the checkpoint workload")
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/weir-bench-data"), help="where the bid files go")
    ap.add_argument("--workloads", default="gen-q0,gen-q1,gen-q2,gen-q5,gen-q7,gen-q8,file-tumble,file-hop,file-q7,chat,kafka-json,sink-clickhouse,sink-ilp-http,sink-ilp-tcp,scan,freshness,checkpoint")
    ap.add_argument("--peers", action="store_true", help="run the peers on the file workloads")
    ap.add_argument("--parallelism", default="1,2", help="peer parallelism levels")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything works")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--name", default="", help="suffix of the results file name (results/<date>-<commit>-<name>)")
    args = ap.parse_args()
    if args.smoke:
        args.events, args.small_events, args.chat_rows, args.kafka_rows = 20_000, 20_000, 50_000, 20_000
        args.sink_rows, args.sink_batch_rows = 20_000, 5_000
        args.scan_rows, args.scan_repeats = 20_000, 1
        args.freshness_seconds, args.freshness_rate = 3, 2_000
        args.checkpoint_groups = "20000"

    workloads = args.workloads.split(",")
    results, peers = [], []
    data_dir = None
    if any(w.startswith("file-") for w in workloads):
        data_dir = os.path.join(args.data, f"nexmark-{args.events}")
        if not os.path.exists(os.path.join(data_dir, "done")):
            files = 10 if args.events >= 1_000_000 else 2
            subprocess.run([args.weir, "generate-nexmark", "--out", data_dir, "--events", str(args.events),
                            "--files", str(files), "--base-time", BASE_TIME], check=True)
            open(os.path.join(data_dir, "done"), "w").close()
    bids = nexmark_bids(args.events)
    for w in workloads:
        print(f"running {w} ...", file=sys.stderr)
        if w.startswith("gen-"):
            results.append(gen_workload(args, w[4:]))
        elif w.startswith("file-"):
            r = file_workload(args, w[5:], data_dir, bids)
            results.append(r)
            if args.peers:
                for p in [int(x) for x in args.parallelism.split(",")]:
                    for peer in run_peers(args, data_dir, w[5:], p):
                        peer["workload"] = w
                        peer["agrees"] = peer.get("checksum") == r["checksum"] if peer.get("status") == "ok" else None
                        peers.append(peer)
        elif w == "chat":
            results.append(chat_workload(args))
        elif w == "kafka-json":
            result = kafka_json_workload(args)
            if result is None:
                continue
            results.append(result)
        elif w.startswith("sink-"):
            result = sink_workload(args, w[5:])
            if result is None:
                continue
            results.append(result)
        elif w == "scan":
            results.append(scan_workload(args))
        elif w == "freshness":
            results.append(freshness_workload(args))
        elif w == "checkpoint":
            results.append(checkpoint_workload(args))
        elif w == "memory":
            results.append(freshness_workload(args, seconds=args.memory_seconds, q5=True))
        else:
            sys.exit(f"unknown workload {w}")
        print(json.dumps(results[-1]), file=sys.stderr)

    lines = ["| workload | events | counted | wall s | CPU s | per s | per CPU-s | peak RSS MB | state MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "per_s" in r:
            lines.append(f"| {r['workload']} | {fmt(r['events'])} | {r['counted']} | {r['wall_s']} | {r['cpu_s']} | "
                         f"{fmt(r['per_s'])} | {fmt(r['per_cpu_s'])} | {r['peak_rss_mb']} | {r['state_mb']} |")
    for r in results:
        if "freshness_p99_ms" in r:
            lines.append("")
            lines.append(f"{r['workload']}: {fmt(r['rate_bids_per_s'])} bids/s for {r['seconds']} s: freshness "
                         f"p50 {r['freshness_p50_ms']} ms, p99 {r['freshness_p99_ms']} ms, max {r['freshness_max_ms']} ms; "
                         f"CPU {r['cpu_share']} cores; peak RSS {r['peak_rss_mb']} MB; RSS over time (MB): "
                         f"{r['rss_mb_over_time']}")
    if peers:
        # Peers' rates use the engine's own job time (Flink's job runtime, the sum of Spark's
        # micro-batches), leaving out JVM start-up and planning; the ratio compares Weir's
        # wall-clock rate (the whole server, start to last window) with that.
        lines += ["", "| workload | engine | mode | input | P | job s | bids/s | Weir bids/s ÷ peer | agrees |",
                  "|---|---|---|---|---|---|---|---|---|"]
        weir_by = {r["workload"]: r for r in results}
        for p in peers:
            if p.get("status") != "ok":
                lines.append(f"| {p['workload']} | {p['engine']} | {p.get('mode')} | | {p['parallelism']} | - | failed | - | - |")
                continue
            job = p.get("engine_job_seconds") or p["wall_seconds"]
            rate = round(bids / job) if job else 0
            w = weir_by[p["workload"]]
            ratio = round(w["per_s"] / rate, 2) if rate else "-"
            lines.append(f"| {p['workload']} | {p['engine']} {p.get('version', '')} | {p.get('mode')} | {p.get('input')} | "
                         f"{p['parallelism']} | {job:.2f} | {fmt(rate)} | {ratio} | {p['agrees']} |")
    for r in results:
        if "batch_rows" in r:
            lines.append("")
            lines.append(f"{r['workload']}: {fmt(r['per_s'])} rows/s delivered ({fmt(r['per_cpu_s'])} per CPU-second of Weir), "
                         f"in {r['batches']} batches of up to {fmt(r['batch_rows'])} rows; sink lag p50 {r['lag_p50_ms']} ms, "
                         f"p99 {r['lag_p99_ms']} ms; peak RSS {r['peak_rss_mb']} MB")
    for r in results:
        if r.get("workload") == "scan":
            lines.append("")
            lines.append(f"scan of a {fmt(r['rows'])}-row view ({r['flight_arrow_mb']} MB as Arrow, {r['pgwire_wire_mb']} MB as "
                         f"pgwire binary rows): Flight SQL (ADBC into pyarrow) {r['flight_s']} s, {fmt(r['flight_rows_per_s'])} rows/s, "
                         f"{r['flight_mb_per_s']} MB/s; pgwire binary, raw reader {r['pgwire_raw_s']} s, "
                         f"{fmt(r['pgwire_raw_rows_per_s'])} rows/s, {r['pgwire_raw_mb_per_s']} MB/s; asyncpg {r['pgwire_asyncpg_s']} s, "
                         f"{fmt(r['pgwire_asyncpg_rows_per_s'])} rows/s; Flight {r['flight_over_pgwire']}x the faster pgwire reader. "
                         f"Server CPU per scan: Flight {r['flight_server_cpu_s']} s, pgwire {r['pgwire_raw_server_cpu_s']} s (raw reader), "
                         f"{r['pgwire_asyncpg_server_cpu_s']} s (asyncpg)")
    for r in results:
        if r.get("workload") == "checkpoint":
            lines.append("")
            lines.append(f"checkpoints on Nexmark q5: {fmt(r['q5_per_cpu_s_checkpoints_off'])} bids per CPU-second without, "
                         f"{fmt(r['q5_per_cpu_s_checkpoints_10s'])} every 10 s (overhead {r['q5_overhead_10s']:.1%}), "
                         f"{fmt(r['q5_per_cpu_s_checkpoints_1s'])} every 1 s (overhead {r['q5_overhead_1s']:.1%}); target < 10%")
            lines += ["", "| groups | full checkpoint (every group) MB | ms | next checkpoint (nothing changed) MB | ms | "
                      "restart to ready s | restart to first answer s | peak RSS MB |",
                      "|---|---|---|---|---|---|---|---|"]
            for g in r["groups"]:
                lines.append(f"| {fmt(g['groups'])} | {g['checkpoint_mb']} | {g['checkpoint_ms']} | {g['steady_checkpoint_mb']} | "
                             f"{g['steady_checkpoint_ms']} | {g['recovery_ready_s']} | {g['recovery_s']} | {g['peak_rss_mb']} |")
    for r in results:
        if "decode_only_per_s" in r:
            lines.append("")
            lines.append(f"kafka-json: {fmt(r['per_cpu_s'])} messages per CPU-second through Kafka, the source and a "
                         f"TUMBLE view; decoding the same messages alone on one core: {fmt(r['decode_only_per_s'])}/s; "
                         f"share {r['share_of_decode']:.0%} (target >= 80%)")
    table = "\n".join(lines)
    print(table)
    disagree = [p for p in peers if p.get("agrees") is False]
    if disagree:
        sys.exit(f"peers disagree with Weir: {[(p['engine'], p['workload'], p['parallelism']) for p in disagree]}")
    if args.record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        date = datetime.date.today().isoformat()
        machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()}
        base = os.path.join(HERE, "results", f"{date}-{commit}" + (f"-{args.name}" if args.name else ""))
        with open(base + ".json", "w") as f:
            json.dump({"date": date, "commit": commit, "machine": machine, "args": vars(args),
                       "results": results, "peers": peers}, f, indent=2, default=str)
        with open(base + ".md", "w") as f:
            f.write(f"# Weir benchmark suite, {date}, commit {commit}\n\nMachine: {machine}\n\n{table}\n")
        print(f"recorded {base}.json")


if __name__ == "__main__":
    main()
