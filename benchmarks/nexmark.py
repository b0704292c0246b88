#!/usr/bin/env python3
"""Nexmark q5 and q7 (in full, and their aggregates alone) on Weir, through Weir's public SQL interface.

Starts `weir serve` on free ports with a fresh data directory, creates a bounded Nexmark bid
source (`nexmark.event.num` events, generated as fast as possible) and the views, waits until
every window has closed (the source's end moves the watermark to +infinity, so the
EMIT ON WINDOW CLOSE view holds every bid once), checks the results against what the event
count implies and against batch recomputations over the other view, and reports:

  * bids/s over the wall-clock time from CREATE to the last window closed,
  * bids per CPU-second of the server process (user + system, all threads),
  * the server's peak RSS (VmHWM).

Usage:
    benchmarks/nexmark.py --weir target/release/weir [--events 10000000] [--record]

With --record, results go to benchmarks/results/<date>-<commit>.json and .md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import psycopg

VIEWS = {
    # q5 in full: the auctions with the most bids per hopping window (a window join).
    "q5": """CREATE MATERIALIZED VIEW q5 AS
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
        EMIT ON WINDOW CLOSE""",
    # q7 in full: the bids carrying their 10 s window's highest price (an interval join).
    "q7": """CREATE MATERIALIZED VIEW q7 AS
        SELECT b.auction, b.price, b.bidder, b.date_time
        FROM bid b
        JOIN (SELECT max(price) AS maxprice, window_end AS date_time
              FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_end) b1
        ON b.price = b1.maxprice
        WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time""",
    # q5's core: bids per auction in 10 s windows sliding by 2 s.
    "q5_core": """CREATE MATERIALIZED VIEW q5_core AS
        SELECT auction, window_start, window_end, count(*) AS num
        FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
        GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE""",
    # q7's core: the highest bid per 10 s tumbling window.
    "q7_core": """CREATE MATERIALIZED VIEW q7_core AS
        SELECT window_start, window_end, max(price) AS max_price, count(*) AS bids
        FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
        GROUP BY window_start, window_end EMIT ON WINDOW CLOSE""",
}


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def start(weir, data_dir):
    p = subprocess.Popen(
        [weir, "serve", "--pg-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "WEIR_LOG": "warn"},
    )
    line = p.stdout.readline()
    m = re.search(r"pg=([\d.]+):(\d+)", line)
    if not m:
        p.kill()
        sys.exit(f"weir did not start: {line!r}")
    return p, m.group(1), int(m.group(2))


def check(conn, query, bids):
    """Checks the finished view against what the event count implies; returns a size of the result."""
    one = lambda sql: conn.execute(sql).fetchone()[0]
    if query == "q5_core":
        # Every bid is in size/slide = 5 windows.
        if one("SELECT coalesce(sum(num), 0) FROM q5_core") != 5 * bids:
            sys.exit("q5_core: the windows do not hold every bid five times")
        return one("SELECT count(DISTINCT window_start) FROM q5_core")
    if query == "q7_core":
        if one("SELECT coalesce(sum(bids), 0) FROM q7_core") != bids:
            sys.exit("q7_core: the windows do not hold every bid once")
        return one("SELECT count(*) FROM q7_core")
    if query == "q5":
        # Every window has a hottest auction, and within a window all winners tie.
        windows = one("SELECT count(DISTINCT window_start) FROM q5")
        ties = one("SELECT count(*) FROM (SELECT window_start FROM q5 GROUP BY window_start HAVING min(num) <> max(num)) t")
        if windows == 0 or ties != 0:
            sys.exit(f"q5: {windows} windows, {ties} with unequal winners")
        return windows
    # q7: some bid carries each window's maximum.
    rows = one("SELECT count(*) FROM q7")
    if rows == 0:
        sys.exit("q7: no highest bids")
    return rows


def run(weir, events, query, splits):
    bids = events // 50 * 46 + max(0, min(events % 50 - 4, 46))
    with tempfile.TemporaryDirectory() as data_dir:
        server, host, port = start(weir, data_dir)
        try:
            with psycopg.connect(host=host, port=port, user="weir", dbname="weir", autocommit=True) as conn:
                cpu0, _ = proc_stats(server.pid)
                t0 = time.monotonic()
                conn.execute(f"""CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
                    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
                    WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '{events}',
                          nexmark.split.num = '{splits}', nexmark.max.chunk.size = '4096',
                          nexmark.base.time = '1700000000000', watermark.idle_timeout = '0')""")
                conn.execute(VIEWS[query])
                # Done when the source has ended and a FLUSH after that returned: every bid it read
                # is then reflected in the view, and its final watermark closed every window.
                while True:
                    conn.execute("FLUSH")
                    if conn.execute("SELECT ended FROM weir_catalog.sources WHERE name = 'bid'").fetchone()[0]:
                        conn.execute("FLUSH")
                        break
                    time.sleep(0.05)
                wall = time.monotonic() - t0
                cpu1, hwm = proc_stats(server.pid)
                read = conn.execute("SELECT rows_read FROM weir_catalog.sources WHERE name = 'bid'").fetchone()[0]
                if read != bids:
                    sys.exit(f"{query}: the source read {read} bids, expected {bids}")
                windows = check(conn, query, bids)
                return {
                    "query": query,
                    "events": events,
                    "bids": bids,
                    "partitions": splits,
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu1 - cpu0, 3),
                    "bids_per_s": round(bids / wall),
                    "bids_per_cpu_s": round(bids / max(cpu1 - cpu0, 1e-9)),
                    "peak_rss_mb": round(hwm / 2**20, 1),
                    "result_size": windows,
                }
        finally:
            server.terminate()
            server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--splits", type=int, default=1)
    ap.add_argument("--queries", default="q5,q7,q5_core,q7_core")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    results = [run(args.weir, args.events, q, args.splits) for q in args.queries.split(",")]
    header = "| query | events | bids | wall s | CPU s | bids/s | bids/CPU-s | peak RSS MB |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['query']} | {r['events']} | {r['bids']} | {r['wall_s']} | {r['cpu_s']} | "
                     f"{r['bids_per_s']:,} | {r['bids_per_cpu_s']:,} | {r['peak_rss_mb']} |")
    table = "\n".join(lines)
    print(table)
    if args.record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        date = datetime.date.today().isoformat()
        machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()}
        here = os.path.dirname(os.path.abspath(__file__))
        base = os.path.join(here, "results", f"{date}-{commit}")
        with open(base + ".json", "w") as f:
            json.dump({"date": date, "commit": commit, "machine": machine, "results": results}, f, indent=2)
        with open(base + ".md", "w") as f:
            f.write(f"# Nexmark on Weir, {date}, commit {commit}\n\nMachine: {machine}\n\n{table}\n")
        print(f"recorded {base}.json")


if __name__ == "__main__":
    main()
