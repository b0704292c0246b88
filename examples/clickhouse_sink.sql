-- The chat-analytics views (examples/chat.sql) pushed to ClickHouse. First, in ClickHouse
-- (clickhouse-client), tables with the views' columns plus the sink's epoch column:
--
--   CREATE TABLE chat_per_min (stream_id String, window_start DateTime, window_end DateTime,
--       messages Int64, chatters Int64, weir_epoch UInt64, weir_deleted UInt8)
--   ENGINE = ReplacingMergeTree(weir_epoch) ORDER BY (stream_id, window_start);
--
--   CREATE TABLE chat_zscore (stream_id String, window_start DateTime, messages Int64,
--       mean_10m Nullable(Float64), stddev_10m Nullable(Float64), z Nullable(Float64),
--       anomaly Nullable(UInt8), weir_epoch UInt64)
--   ENGINE = MergeTree ORDER BY (stream_id, window_start);
--
-- Then, in Weir (psql -h 127.0.0.1 -p 5433 -U weir weir -f examples/clickhouse_sink.sql):

-- Counts per stream and minute, updated while the minute is open: upserts, one row per key.
-- Read in ClickHouse with: SELECT * FROM chat_per_min FINAL WHERE weir_deleted = 0
CREATE SINK chat_per_min_ch FROM chat_per_min WITH (
    connector = 'clickhouse',
    clickhouse.url = 'http://127.0.0.1:8123',
    clickhouse.table = 'chat_per_min',
    type = 'upsert',
    primary_key = 'stream_id, window_start'
);

-- Anomaly scores, emitted once per closed minute: append-only.
CREATE SINK chat_zscore_ch FROM chat_zscore WITH (
    connector = 'clickhouse',
    clickhouse.url = 'http://127.0.0.1:8123',
    clickhouse.table = 'chat_zscore'
);
