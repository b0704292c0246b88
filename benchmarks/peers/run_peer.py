#!/usr/bin/env python3
"""Runs one of Weir's benchmark queries in another engine (a "peer") and prints one JSON object.

    python3 benchmarks/peers/run_peer.py --engine flink|spark|datafusion|duckdb \
        --query tumble|hop|q7 --data DIR --parallelism N [--out FILE]
        [--conf KEY=VALUE ...] [--spark-max-files-per-trigger K]

Any python3 can start it: it re-executes itself with the venv that install.sh made for the engine
(${WEIR_PEERS_DIR:-~/.cache/weir-peers}/{flink,spark,batch}/bin/python), so the start-up of that
interpreter is part of total_seconds.

Input: DIR/parquet/*.parquet (DataFusion, DuckDB, Spark) and the same rows in DIR/csv/*.csv
(Flink: its pip distribution has no Parquet format). Columns: auction, bidder, price, channel,
url, date_time (no time zone, read as UTC), extra. Files are in event-time order by name, with
less than 1 s of disorder; the streaming engines use a watermark of date_time - 2 s.

Queries (every engine must give the same rows, compared through a checksum, see CHECKSUM_KEYS):
  tumble  per auction and 10 s tumbling window: count(*), sum(price), max(price)
  hop     per auction and 10 s window sliding by 2 s: count(*)
  q7      Nexmark q7: the bids of each 10 s tumbling window whose price is the window's highest

Timing: startup_seconds is from the first python start to an engine ready to take the query
(JVM, SparkSession, TableEnvironment); wall_seconds is from submitting the query to its last
result (planning, job start-up inside the engine, reading, computing, the checksum);
total_seconds is from the first python start to the end. engine_job_seconds is the engine's own
account of the job where it gives one (Flink's net job runtime; the sum of Spark's micro-batch
durations), without the planning and job start-up that wall_seconds includes.
"""

import argparse
import glob
import json
import os
import sys
import time
import traceback

T0 = float(os.environ.get("WEIR_PEER_T0") or time.time())

PEERS_DIR = os.environ.get("WEIR_PEERS_DIR") or os.path.expanduser("~/.cache/weir-peers")
VENV_OF = {"flink": "flink", "spark": "spark", "datafusion": "batch", "duckdb": "batch"}
MODE_OF = {"flink": "streaming", "spark": "streaming", "datafusion": "batch", "duckdb": "batch"}

# What each query's checksum adds up over its result rows (window_start as whole epoch seconds, UTC).
CHECKSUM_KEYS = {
    "tumble": ["rows", "sum_cnt", "sum_sum_price", "sum_max_price", "sum_window_start_epoch_seconds"],
    "hop": ["rows", "sum_cnt", "sum_window_start_epoch_seconds"],
    "q7": ["rows", "sum_price", "sum_auction"],
}

TUMBLE_S, HOP_SIZE_S, HOP_SLIDE_S, WATERMARK_DELAY_S = 10, 10, 2, 2


def reexec_in_venv(engine):
    """Run under the engine's venv (each engine pins its own pyarrow/numpy, hence separate venvs)."""
    venv = os.path.join(PEERS_DIR, VENV_OF[engine])
    python = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.path.exists(python):
        sys.exit(f"run_peer: no venv at {venv}; run benchmarks/peers/install.sh first")
    os.environ["WEIR_PEER_T0"] = repr(T0)
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def input_files(data, fmt):
    files = sorted(glob.glob(os.path.join(data, fmt, f"*.{fmt}")))
    if not files:
        raise FileNotFoundError(f"no {fmt} files in {os.path.join(data, fmt)}")
    return files


def count_events(data):
    """Input rows, from the Parquet footers (the CSV files hold the same rows), outside any timing."""
    import pyarrow.parquet as pq
    return sum(pq.ParquetFile(f).metadata.num_rows for f in input_files(data, "parquet"))


def epoch_seconds(ts):
    """A naive datetime read as UTC, to whole seconds (window starts are whole seconds)."""
    import calendar
    return calendar.timegm(ts.timetuple())


# ---------------------------------------------------------------------------------------------
# DuckDB and DataFusion: batch over the Parquet files, the same SQL in both dialects.
# The window start of a bid is its time floored to the window size from the epoch; a hopping
# window is each of the size/slide windows whose start is that floor (by the slide) minus k*slide.
# ---------------------------------------------------------------------------------------------

def batch_sql(query, bucket, epoch_s):
    """bucket(seconds, col) and epoch_s(col) are the dialect's floor-to-window and to-epoch."""
    backs = ", ".join(f"(INTERVAL '{k * HOP_SLIDE_S} seconds')" for k in range(HOP_SIZE_S // HOP_SLIDE_S))
    if query == "tumble":
        return f"""
            SELECT count(*), sum(cnt), sum(sum_price), sum(max_price), sum({epoch_s('window_start')})
            FROM (SELECT auction, {bucket(TUMBLE_S, 'date_time')} AS window_start,
                         count(*) AS cnt, sum(price) AS sum_price, max(price) AS max_price
                  FROM bids GROUP BY 1, 2) r"""
    if query == "hop":
        return f"""
            SELECT count(*), sum(cnt), sum({epoch_s('window_start')})
            FROM (SELECT auction, {bucket(HOP_SLIDE_S, 'date_time')} - h.back AS window_start,
                         count(*) AS cnt
                  FROM bids CROSS JOIN (VALUES {backs}) AS h(back)
                  GROUP BY 1, 2) r"""
    if query == "q7":
        return f"""
            WITH b AS (SELECT auction, price, bidder, date_time,
                              {bucket(TUMBLE_S, 'date_time')} AS window_start FROM bids),
                 m AS (SELECT window_start, max(price) AS maxprice FROM b GROUP BY window_start)
            SELECT count(*), sum(r.price), sum(r.auction)
            FROM (SELECT b.auction, b.price, b.bidder, b.date_time, b.window_start
                  FROM b JOIN m ON b.window_start = m.window_start AND b.price = m.maxprice) r"""
    raise ValueError(query)


def checksum_from_row(query, row):
    return {k: int(v or 0) for k, v in zip(CHECKSUM_KEYS[query], row)}


def run_duckdb(args):
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {args.parallelism}")
    con.execute("SET TimeZone = 'UTC'")
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in input_files(args.data, "parquet"))
    con.execute(f"CREATE VIEW bids AS SELECT * FROM read_parquet([{files}])")
    sql = batch_sql(
        args.query,
        bucket=lambda s, c: f"time_bucket(INTERVAL '{s} seconds', {c}, TIMESTAMP '1970-01-01 00:00:00')",
        epoch_s=lambda c: f"epoch_ms({c}) // 1000",
    )
    ready = time.time()
    row = con.execute(sql).fetchone()
    return {"version": duckdb.__version__, "ready": ready, "done": time.time(),
            "checksum": checksum_from_row(args.query, row)}


def run_datafusion(args):
    import datafusion
    from datafusion import SessionConfig, SessionContext
    cfg = (SessionConfig().with_target_partitions(args.parallelism)
           .set("datafusion.execution.time_zone", "UTC"))
    ctx = SessionContext(cfg)
    input_files(args.data, "parquet")  # fail clearly when the directory is empty
    ctx.register_parquet("bids", os.path.join(args.data, "parquet") + "/", file_extension=".parquet")
    sql = batch_sql(
        args.query,
        bucket=lambda s, c: f"date_bin(INTERVAL '{s} seconds', {c}, TIMESTAMP '1970-01-01 00:00:00')",
        epoch_s=lambda c: f"to_unixtime({c})",
    )
    ready = time.time()
    row = list(ctx.sql(sql).to_pylist()[0].values())
    return {"version": datafusion.__version__, "ready": ready, "done": time.time(),
            "checksum": checksum_from_row(args.query, row)}


# ---------------------------------------------------------------------------------------------
# Flink: streaming mode over the CSV files. Window TVF aggregates are append-only (each window
# once, when the watermark passes its end); the bounded source's end sends the final watermark,
# which closes the last windows.
# ---------------------------------------------------------------------------------------------

FLINK_CSV_COLUMNS = [("auction", "BIGINT"), ("bidder", "BIGINT"), ("price", "BIGINT"),
                     ("channel", "STRING"), ("url", "STRING"), ("date_time", "TIMESTAMP(3)"),
                     ("extra", "STRING")]

FLINK_QUERIES = {
    # Each result is re-windowed by its own window_time (cascading window aggregation), so the
    # checksum arrives as one append-only row per window instead of every result row crossing
    # into Python; the outer window holds exactly the rows of one inner window (ws).
    "tumble": [
        f"""CREATE TEMPORARY VIEW windowed AS
            SELECT auction, window_start AS ws, window_time AS wt,
                   COUNT(*) AS cnt, SUM(price) AS sum_price, MAX(price) AS max_price
            FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '{TUMBLE_S}' SECOND))
            GROUP BY auction, window_start, window_end, window_time""",
        f"""SELECT ws, COUNT(*), SUM(cnt), SUM(sum_price), SUM(max_price)
            FROM TABLE(TUMBLE(TABLE windowed, DESCRIPTOR(wt), INTERVAL '{TUMBLE_S}' SECOND))
            GROUP BY ws, window_start, window_end""",
    ],
    "hop": [
        f"""CREATE TEMPORARY VIEW windowed AS
            SELECT auction, window_start AS ws, window_time AS wt, COUNT(*) AS cnt
            FROM TABLE(HOP(TABLE bids, DESCRIPTOR(date_time),
                           INTERVAL '{HOP_SLIDE_S}' SECOND, INTERVAL '{HOP_SIZE_S}' SECOND))
            GROUP BY auction, window_start, window_end, window_time""",
        f"""SELECT ws, COUNT(*), SUM(cnt)
            FROM TABLE(TUMBLE(TABLE windowed, DESCRIPTOR(wt), INTERVAL '{HOP_SLIDE_S}' SECOND))
            GROUP BY ws, window_start, window_end""",
    ],
    # q7: the max per window (window aggregate) joined back to the window's bids with a window
    # join, so a bid counts only in the window that holds it. Its result is about one row per
    # window, collected as is.
    "q7": [
        f"""CREATE TEMPORARY VIEW bw AS
            SELECT auction, price, bidder, date_time, window_start, window_end
            FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '{TUMBLE_S}' SECOND))""",
        f"""CREATE TEMPORARY VIEW mw AS
            SELECT window_start, window_end, MAX(price) AS maxprice
            FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '{TUMBLE_S}' SECOND))
            GROUP BY window_start, window_end""",
        """SELECT B.auction, B.price, B.bidder, B.date_time, B.window_start
           FROM bw B JOIN mw M
             ON B.window_start = M.window_start AND B.window_end = M.window_end
            AND B.price = M.maxprice""",
    ],
}


# Options beyond Flink's defaults (--conf adds to them or overrides them). Object reuse lets
# chained operators pass records without copying them, which SQL operators are written for; the
# Nexmark benchmark of the Flink project runs with it too. It took the tumble job on 5M test bids
# from 56 s to 29 s here.
FLINK_DEFAULTS = {"pipeline.object-reuse": "true"}


def engine_conf(args):
    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"run_peer: --conf wants KEY=VALUE, not {item!r}")
        conf[key.strip()] = value.strip()
    return conf


def run_flink(args):
    import importlib.metadata

    from pyflink.common import Configuration, WatermarkStrategy
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.datastream.connectors.file_system import FileSource, FileSplitAssignerProvider
    from pyflink.datastream.formats.csv import CsvReaderFormat, CsvSchema
    from pyflink.java_gateway import get_gateway
    from pyflink.table import DataTypes, Schema, StreamTableEnvironment

    jar = os.path.join(PEERS_DIR, "flink", "weir-peers-flink.jar")
    if not os.path.exists(jar):
        raise FileNotFoundError(f"{jar} missing; run benchmarks/peers/install.sh flink")
    csv_dir = os.path.join(args.data, "csv")
    input_files(args.data, "csv")

    conf = Configuration()
    conf.set_string("parallelism.default", str(args.parallelism))
    conf.set_string("pipeline.jars", "file://" + jar)
    conf.set_string("rest.bind-address", "127.0.0.1")
    conf.set_string("rest.address", "127.0.0.1")
    for k, v in FLINK_DEFAULTS.items():
        conf.set_string(k, v)
    extra_conf = engine_conf(args)
    for k, v in extra_conf.items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    tenv = StreamTableEnvironment.create(env)
    tenv.get_config().set("table.local-time-zone", "UTC")
    for k, v in {**FLINK_DEFAULTS, **extra_conf}.items():
        if k.startswith("table."):
            tenv.get_config().set(k, v)

    # The SQL 'filesystem' connector would read these files with the same FileSource and CSV
    # decoder, but it hands files to readers in hash order: a reader that takes bids-00002 before
    # bids-00000 has moved its watermark past all of bids-00000, whose rows are then dropped as
    # late (one run on the 3-file test data counted 200,000 of 600,000 bids). The DataStream
    # FileSource lets us set a split assigner that hands out files in name order (install.sh
    # compiles it; see flink/).
    types = {"BIGINT": DataTypes.BIGINT(), "STRING": DataTypes.STRING(),
             "TIMESTAMP(3)": DataTypes.TIMESTAMP(3)}
    builder = CsvSchema.builder()
    for name, typ in FLINK_CSV_COLUMNS:
        builder = (builder.add_number_column(name, types[typ]) if typ == "BIGINT"
                   else builder.add_string_column(name))
    # The CSV parser reads date_time as text; the row type makes the decoder turn it into
    # TIMESTAMP(3) (the same conversion the SQL connector's csv format does).
    row_type = DataTypes.ROW([DataTypes.FIELD(n, types[t]) for n, t in FLINK_CSV_COLUMNS])
    csv_schema = CsvSchema(builder.build()._j_schema, row_type)
    assigner = get_gateway().jvm.weir.peers.NameOrderedSplitAssigner.PROVIDER
    source = (FileSource.for_record_stream_format(CsvReaderFormat.for_schema(csv_schema), csv_dir)
              .set_split_assigner(FileSplitAssignerProvider(assigner))
              .build())
    stream = env.from_source(source, WatermarkStrategy.no_watermarks(), "bids")
    bids = tenv.from_data_stream(stream, Schema.new_builder().watermark(
        "date_time", f"date_time - INTERVAL '{WATERMARK_DELAY_S}' SECOND").build())
    tenv.create_temporary_view("bids", bids)

    *views, select = FLINK_QUERIES[args.query]
    for v in views:
        tenv.execute_sql(v)
    ready = time.time()
    result = tenv.execute_sql(select)
    acc = [0] * len(CHECKSUM_KEYS[args.query])
    with result.collect() as rows:
        for r in rows:
            if args.query == "q7":
                auction, price = r[0], r[1]
                acc[0] += 1
                acc[1] += price
                acc[2] += auction
            else:
                ws, n, *sums = r
                acc[0] += n
                for i, s in enumerate(sums):
                    acc[1 + i] += s
                acc[-1] += n * epoch_seconds(ws)
    done = time.time()
    extra = {}
    try:
        job = result.get_job_client().get_job_execution_result().result()
        extra["engine_job_seconds"] = job.get_net_runtime() / 1000.0
    except Exception as e:  # only a detail: the job has finished either way
        extra["flink_net_runtime_error"] = str(e)[:200]
    return {"version": importlib.metadata.version("apache-flink"), "ready": ready, "done": done,
            "checksum": dict(zip(CHECKSUM_KEYS[args.query], acc)),
            "input": "csv", "extra": extra}


# ---------------------------------------------------------------------------------------------
# Spark Structured Streaming: readStream over the Parquet files, trigger(availableNow), append
# mode, foreachBatch adding up the checksum of each micro-batch's output.
# ---------------------------------------------------------------------------------------------

# Spark's watermark only advances with data, and availableNow stops when the files are read, so
# windows ending after (last event - 2 s) would stay in state unemitted. A sentinel bid far in
# event time, read as the last file, moves the watermark past every real window; the following
# no-data micro-batch then emits them. Its own windows never close, so it is never in a result.
SENTINEL_TIME = (2200, 1, 1)


def write_sentinel(dirname, data_files):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq
    t = pa.table({
        "auction": pa.array([-1], pa.int64()), "bidder": pa.array([-1], pa.int64()),
        "price": pa.array([0], pa.int64()), "channel": [""], "url": [""],
        "date_time": pa.array([datetime.datetime(*SENTINEL_TIME)], pa.timestamp("us")),
        "extra": [""],
    })
    path = os.path.join(dirname, "zz-sentinel.parquet")
    pq.write_table(t, path)
    # The file source orders files by modification time: make the sentinel the newest, so that
    # it is in the last micro-batch even when a batch takes fewer than all files.
    newest = max(os.stat(f).st_mtime for f in data_files)
    os.utime(path, (newest + 1, max(newest + 1, time.time())))
    return path


def hadoop_glob_escape(path):
    return "".join("\\" + c if c in "{}[]*?\\," else c for c in path)


def run_spark(args):
    import shutil
    import tempfile

    work = tempfile.mkdtemp(prefix="weir-peer-spark-")  # sentinel and checkpoints
    try:
        return spark_query(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def spark_query(args, work):
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    data_files = input_files(args.data, "parquet")
    sentinel_dir = os.path.join(work, "sentinel")
    os.makedirs(sentinel_dir)
    write_sentinel(sentinel_dir, data_files)
    # One streaming file source over both directories (a Hadoop glob alternation).
    source_glob = "/{%s,%s}/*.parquet" % (
        hadoop_glob_escape(os.path.abspath(os.path.join(args.data, "parquet")).lstrip("/")),
        hadoop_glob_escape(sentinel_dir.lstrip("/")))

    n = args.parallelism
    spark = (SparkSession.builder.master(f"local[{n}]")
             .appName(f"weir-peer-{args.query}")
             .config("spark.sql.shuffle.partitions", str(n))
             .config("spark.default.parallelism", str(n))
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.driver.memory", os.environ.get("WEIR_PEERS_SPARK_MEMORY", "6g"))
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.streaming.checkpointLocation", os.path.join(work, "checkpoints"))
             .config(map=engine_conf(args))
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")

    schema = T.StructType([
        T.StructField("auction", T.LongType()), T.StructField("bidder", T.LongType()),
        T.StructField("price", T.LongType()), T.StructField("channel", T.StringType()),
        T.StructField("url", T.StringType()), T.StructField("date_time", T.TimestampType()),
        T.StructField("extra", T.StringType()),
    ])
    reader = spark.readStream.schema(schema)
    if args.spark_max_files_per_trigger:
        # Smaller micro-batches, emitting windows as the watermark passes them (Spark's default
        # under availableNow is one micro-batch holding every file). Spark orders the files by
        # modification time, which must then follow event time, or rows come late and are dropped
        # (spark_rows_dropped_by_watermark, all_events_counted tell).
        reader = reader.option("maxFilesPerTrigger", args.spark_max_files_per_trigger)
    bids = (reader.parquet(source_glob)
            .withWatermark("date_time", f"{WATERMARK_DELAY_S} seconds"))

    epoch = lambda c: F.unix_timestamp(c)  # noqa: E731  whole seconds, session time zone UTC
    if args.query == "tumble":
        out = (bids.groupBy("auction", F.window("date_time", f"{TUMBLE_S} seconds"))
               .agg(F.count("*").alias("cnt"), F.sum("price").alias("sum_price"),
                    F.max("price").alias("max_price"))
               .select("auction", F.col("window.start").alias("window_start"),
                       "cnt", "sum_price", "max_price"))
        parts = [F.count("*"), F.sum("cnt"), F.sum("sum_price"), F.sum("max_price"),
                 F.sum(epoch("window_start"))]
    elif args.query == "hop":
        out = (bids.groupBy("auction", F.window("date_time", f"{HOP_SIZE_S} seconds",
                                                 f"{HOP_SLIDE_S} seconds"))
               .agg(F.count("*").alias("cnt"))
               .select("auction", F.col("window.start").alias("window_start"), "cnt"))
        parts = [F.count("*"), F.sum("cnt"), F.sum(epoch("window_start"))]
    elif args.query == "q7":
        # The max per window (a streaming aggregate) joined with the bids on the window itself.
        # Spark 4 accepts this chain of stateful operators in append mode; the join's equality
        # on the event-time window column lets it drop state once the watermark passes a window.
        # A stream may carry one event-time column only: on the bids side that is the window;
        # the bid's own time travels as a plain copy (an expression drops the watermark mark).
        b = bids.select("auction", "price", "bidder",
                        (F.col("date_time") + F.expr("INTERVAL 0 SECONDS")).alias("bid_time"),
                        F.window("date_time", f"{TUMBLE_S} seconds").alias("window"))
        m = (bids.groupBy(F.window("date_time", f"{TUMBLE_S} seconds").alias("window"))
             .agg(F.max("price").alias("maxprice")))
        out = (b.join(m, (b["window"] == m["window"]) & (b["price"] == m["maxprice"]))
               .select(b["auction"], b["price"], b["bidder"], b["bid_time"].alias("date_time"),
                       b["window"]["start"].alias("window_start")))
        parts = [F.count("*"), F.sum("price"), F.sum("auction")]
    else:
        raise ValueError(args.query)

    acc = [0] * len(parts)

    def add_batch(batch, _batch_id):
        row = batch.agg(*parts).collect()[0]
        for i, v in enumerate(row):
            acc[i] += int(v or 0)

    ready = time.time()
    query = (out.writeStream.outputMode("append").foreachBatch(add_batch)
             .trigger(availableNow=True).start())
    query.awaitTermination()
    done = time.time()

    progress = query.recentProgress
    extra = {
        # Time inside the micro-batches (what Spark's progress reports), without query start-up.
        "engine_job_seconds": sum(p.get("durationMs", {}).get("triggerExecution", 0)
                                  for p in progress) / 1000.0,
        "spark_micro_batches": len(progress),
        "spark_max_files_per_trigger": args.spark_max_files_per_trigger,
        "spark_rows_dropped_by_watermark": sum(
            op.get("numRowsDroppedByWatermark", 0) for p in progress for op in p.get("stateOperators", [])),
        # Rows left in state at the end: only the sentinel's own windows should remain.
        "spark_state_rows_at_end": sum(op.get("numRowsTotal", 0)
                                       for op in (progress[-1].get("stateOperators", []) if progress else [])),
        # Rows read by the source(s), the sentinel included; q7 reads the files twice (its two
        # branches are two scans of the same stream).
        "spark_source_rows": sum(p.get("numInputRows", 0) for p in progress),
    }
    version = spark.version
    spark.stop()
    return {"version": version, "ready": ready, "done": done,
            "checksum": dict(zip(CHECKSUM_KEYS[args.query], acc)),
            "input": "parquet", "extra": extra}


RUNNERS = {"flink": run_flink, "spark": run_spark, "datafusion": run_datafusion, "duckdb": run_duckdb}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", required=True, choices=sorted(RUNNERS))
    ap.add_argument("--query", required=True, choices=sorted(CHECKSUM_KEYS))
    ap.add_argument("--data", required=True, help="directory holding parquet/ and csv/")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--out", help="also write the JSON object to this file")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="Flink or Spark only: one more engine option (repeatable)")
    ap.add_argument("--spark-max-files-per-trigger", type=int,
                    help="Spark only: files per micro-batch (default: all files in one)")
    args = ap.parse_args()
    reexec_in_venv(args.engine)
    args.data = os.path.abspath(args.data)

    report = {"engine": args.engine, "mode": MODE_OF[args.engine], "query": args.query,
              "parallelism": args.parallelism, "data": args.data}
    if args.conf:
        report["conf"] = engine_conf(args)
    try:
        report["events"] = count_events(args.data)
        r = RUNNERS[args.engine](args)
        done = time.time()
        cs = r["checksum"]
        report.update({
            "status": "ok",
            "version": r["version"],
            "input": r.get("input", "parquet"),
            "result_rows": cs["rows"],
            "wall_seconds": round(r["done"] - r["ready"], 3),
            "startup_seconds": round(r["ready"] - T0, 3),
            "total_seconds": round(done - T0, 3),
            "checksum": cs,
        })
        # Every bid is in exactly one tumbling and HOP_SIZE/HOP_SLIDE hopping windows: a shortfall
        # means rows were dropped as late or windows were never emitted.
        expected = {"tumble": 1, "hop": HOP_SIZE_S // HOP_SLIDE_S}.get(args.query)
        if expected:
            report["all_events_counted"] = cs["sum_cnt"] == expected * report["events"]
        report.update(r.get("extra", {}))
        # A batch engine's job is the query itself.
        report.setdefault("engine_job_seconds", report["wall_seconds"])
        status = 0
    except Exception as e:
        traceback.print_exc()
        # The full trace went to stderr; a Java exception's message carries its stack, cut it off.
        message = str(e).split("\n\tat ")[0]
        report.update({"status": "error", "error": f"{type(e).__name__}: {message}"[:2000],
                       "total_seconds": round(time.time() - T0, 3)})
        status = 1
    text = json.dumps(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text, flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
