#!/usr/bin/env python3
"""Runs the peers one after another over the same files and checks that they agree.

    python3 benchmarks/peers/compare.py --data DIR [--engines duckdb datafusion flink spark]
        [--queries tumble hop q7] [--parallelism 1 2] [--jsonl FILE] [--markdown FILE]

One engine at a time (the JVM engines take both cores). For each query, every successful run must
have the same checksum; the exit status is 1 when one differs or a run failed. Prints a Markdown
table of the timings (and writes it with --markdown); --jsonl keeps every run's JSON object.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(engine, query, data, parallelism):
    cmd = [sys.executable, os.path.join(HERE, "run_peer.py"), "--engine", engine, "--query", query,
           "--data", data, "--parallelism", str(parallelism)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        return {"engine": engine, "query": query, "parallelism": parallelism, "status": "error",
                "error": (p.stderr or p.stdout)[-500:]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--engines", nargs="+", default=["duckdb", "datafusion", "flink", "spark"])
    ap.add_argument("--queries", nargs="+", default=["tumble", "hop", "q7"])
    ap.add_argument("--parallelism", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--jsonl")
    ap.add_argument("--markdown")
    args = ap.parse_args()

    results = []
    for query in args.queries:
        for engine in args.engines:
            for n in args.parallelism:
                r = run(engine, query, args.data, n)
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")

    ok = True
    for query in args.queries:
        sums = {json.dumps(r["checksum"], sort_keys=True) for r in results
                if r["query"] == query and r.get("status") == "ok"}
        if len(sums) > 1:
            ok = False
            print(f"DISAGREE on {query}: {sorted(sums)}", file=sys.stderr)
    failed = [r for r in results if r.get("status") != "ok"]
    ok = ok and not failed

    lines = ["| query | engine | mode | p | events | result rows | wall s | engine job s | start-up s | total s | checksum agrees |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("status") != "ok":
            lines.append(f"| {r['query']} | {r['engine']} | | {r['parallelism']} | | {r.get('status')} | | | | | |")
            continue
        agree = all(o["checksum"] == r["checksum"] for o in results
                    if o["query"] == r["query"] and o.get("status") == "ok")
        lines.append(f"| {r['query']} | {r['engine']} {r['version']} | {r['mode']} | {r['parallelism']} | "
                     f"{r['events']} | {r['result_rows']} | {r['wall_seconds']:.2f} | "
                     f"{r['engine_job_seconds']:.2f} | {r['startup_seconds']:.2f} | "
                     f"{r['total_seconds']:.2f} | {'yes' if agree else 'NO'} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    print("all runs agree" if ok else "MISMATCH OR FAILURE", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
