#!/usr/bin/env python3
"""A small look-alike of the bid files Weir's generator writes, for testing the peers.

Writes DIR/parquet/bids-NNNNN.parquet and the same rows as DIR/csv/bids-NNNNN.csv (no header,
RFC 4180 quoting where needed, timestamps as `2026-01-01 00:00:00.123`). Event time starts at a
fixed base and grows at --rate events/s; each event is pulled back by up to --disorder-ms, so the
files are almost ordered (disorder below 1 s) as the real ones are. Prices are drawn from a narrow
range so that windows sometimes have several bids at their maximum (q7 must return all of them),
and `extra` sometimes holds commas and quotes so the CSV readers meet quoting.

Run it with the batch venv's python (it needs pyarrow):
    ~/.cache/weir-peers/batch/bin/python benchmarks/peers/gen_testdata.py /tmp/weir-peers-data
"""

import argparse
import csv
import datetime
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BASE = datetime.datetime(2026, 1, 1)  # naive: the files carry no time zone

SCHEMA = pa.schema([
    ("auction", pa.int64()),
    ("bidder", pa.int64()),
    ("price", pa.int64()),
    ("channel", pa.string()),
    ("url", pa.string()),
    ("date_time", pa.timestamp("us")),
    ("extra", pa.string()),
])


def make_file(rng, first, n, args):
    i = np.arange(first, first + n, dtype=np.int64)
    base_ms = int(BASE.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
    ms = base_ms + (i * 1000) // args.rate - rng.integers(0, args.disorder_ms + 1, n)
    ms = np.maximum(ms, base_ms)
    # Mostly bids on a few recent ("hot") auctions, some on any auction so far, as in Nexmark.
    newest = 1000 + i // 50
    hot = newest - rng.integers(0, 100, n)
    cold = 1000 + (rng.random(n) * (newest - 999)).astype(np.int64)
    auction = np.where(rng.random(n) < 0.9, hot, cold)
    bidder = 2000 + rng.integers(0, 5000, n)
    price = rng.integers(1, args.max_price + 1, n)
    channels = np.array(["Google", "Facebook", "Baidu", "Apple"])
    channel = channels[rng.integers(0, 4, n)]
    url = np.char.add("https://www.nexmark.com/item.htm?query=1&channel_id=", (i % 997).astype(str))
    extra = np.where(rng.random(n) < 0.05, 'say "hi", twice', "")
    return pa.table({
        "auction": auction,
        "bidder": bidder,
        "price": price,
        "channel": channel,
        "url": url,
        "date_time": pa.array(ms * 1000, pa.int64()).cast(pa.timestamp("us")),
        "extra": extra,
    }, schema=SCHEMA)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--rows-per-file", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=1000, help="events per second of event time")
    ap.add_argument("--disorder-ms", type=int, default=999)
    ap.add_argument("--max-price", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    os.makedirs(os.path.join(args.dir, "parquet"), exist_ok=True)
    os.makedirs(os.path.join(args.dir, "csv"), exist_ok=True)
    for f in range(args.files):
        t = make_file(rng, f * args.rows_per_file, args.rows_per_file, args)
        name = f"bids-{f:05d}"
        pq.write_table(t, os.path.join(args.dir, "parquet", name + ".parquet"))
        # %S on a millisecond timestamp prints seconds with three decimals.
        text = pc.strftime(t["date_time"].cast(pa.timestamp("ms")), format="%Y-%m-%d %H:%M:%S")
        cols = [c.to_pylist() for c in t.set_column(5, "date_time", text).columns]
        # The csv module quotes only the fields that need it (RFC 4180), as Weir's generator does.
        with open(os.path.join(args.dir, "csv", name + ".csv"), "w", newline="") as out:
            csv.writer(out, lineterminator="\n").writerows(zip(*cols))
    print(f"wrote {args.files} x {args.rows_per_file} bids to {args.dir}")


if __name__ == "__main__":
    main()
