-- The Nexmark views (examples/nexmark.sql) pushed to ClickHouse, and q7's window maxima to
-- QuestDB. Weir creates the ClickHouse tables (clickhouse.create_table); run after nexmark.sql:
--
--   psql -h 127.0.0.1 -p 5433 -U weir weir -f examples/nexmark.sql -f examples/nexmark_sinks.sql
--
-- with ClickHouse's HTTP port on 127.0.0.1:8123 and QuestDB's on 127.0.0.1:9000 (drop the last
-- sink if there is no QuestDB).

-- q5's hot items: the join of two HOP aggregates updates and retracts rows while a window is
-- open, so the sink writes upserts by the view's key. Read in ClickHouse with
--   SELECT * FROM nexmark_q5 FINAL WHERE weir_deleted = 0
CREATE SINK nexmark_q5_ch FROM nexmark_q5 WITH (
    connector = 'clickhouse',
    clickhouse.url = 'http://127.0.0.1:8123',
    clickhouse.table = 'nexmark_q5',
    clickhouse.create_table = 'true',
    type = 'upsert',
    primary_key = 'auction, window_start, window_end'
);

-- q7's highest bids: also upserts (a bid leaves the view when a higher one arrives in its
-- window). A bid is identified by all its columns.
CREATE SINK nexmark_q7_ch FROM nexmark_q7 WITH (
    connector = 'clickhouse',
    clickhouse.url = 'http://127.0.0.1:8123',
    clickhouse.table = 'nexmark_q7',
    clickhouse.create_table = 'true',
    type = 'upsert',
    primary_key = 'auction, price, bidder, date_time'
);

-- The window maxima, emitted once per closed window: append-only, into a plain MergeTree.
CREATE SINK nexmark_q7_max_ch FROM nexmark_q7_max WITH (
    connector = 'clickhouse',
    clickhouse.url = 'http://127.0.0.1:8123',
    clickhouse.table = 'nexmark_q7_max',
    clickhouse.create_table = 'true'
);

-- The same maxima as a QuestDB time series, one row per window at its start. In QuestDB:
--   CREATE TABLE nexmark_q7_max (window_start TIMESTAMP, window_end TIMESTAMP, max_price LONG,
--       bids LONG) TIMESTAMP(window_start) PARTITION BY DAY WAL DEDUP UPSERT KEYS(window_start);
-- (window_end is a second timestamp column: ILP marks it with a `t` suffix, which QuestDB reads
-- as a TIMESTAMP.)
CREATE SINK nexmark_q7_max_questdb FROM nexmark_q7_max WITH (
    connector = 'questdb',
    questdb.addr = '127.0.0.1:9000',
    questdb.table = 'nexmark_q7_max',
    questdb.designated_timestamp = 'window_start'
);
