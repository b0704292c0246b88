-- Live-stream chat analytics from Kafka topics `chat` and `viewer` (what `weir produce-chat`
-- writes). Run with psql, naming the brokers (and, optionally, other topic names):
--
--   weir produce-chat --brokers 127.0.0.1:9092 --rate 200 &
--   psql -h 127.0.0.1 -p 5433 -U weir weir -v brokers=127.0.0.1:9092 -f examples/chat_kafka.sql
\if :{?chat_topic}
\else
  \set chat_topic chat
\endif
\if :{?viewer_topic}
\else
  \set viewer_topic viewer
\endif

-- One message per chat line; `ts` is epoch milliseconds.
CREATE SOURCE chat (
    stream_id VARCHAR, user_id VARCHAR, message VARCHAR, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) INCLUDE partition AS kafka_partition
WITH (
    connector = 'kafka',
    topic = :'chat_topic',
    properties.bootstrap.server = :'brokers',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- Each stream's viewer count, once per second.
CREATE SOURCE viewer (
    stream_id VARCHAR, viewers BIGINT, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    connector = 'kafka',
    topic = :'viewer_topic',
    properties.bootstrap.server = :'brokers',
    scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- Messages and distinct chatters per stream per minute.
CREATE MATERIALIZED VIEW chat_per_min AS
SELECT stream_id, window_start, window_end, count(*) AS messages, count(DISTINCT user_id) AS chatters
FROM TUMBLE(chat, ts, INTERVAL '1' MINUTE)
GROUP BY stream_id, window_start, window_end;

-- The last 60 seconds, sliding every 10 seconds.
CREATE MATERIALIZED VIEW chat_active_60s AS
SELECT stream_id, window_start, window_end, count(*) AS messages, count(DISTINCT user_id) AS chatters
FROM HOP(chat, ts, INTERVAL '10' SECOND, INTERVAL '60' SECOND)
GROUP BY stream_id, window_start, window_end;

-- Average and peak viewers per stream per minute.
CREATE MATERIALIZED VIEW viewers_per_min AS
SELECT stream_id, window_start, window_end, avg(viewers) AS avg_viewers, max(viewers) AS peak_viewers
FROM TUMBLE(viewer, ts, INTERVAL '1' MINUTE)
GROUP BY stream_id, window_start, window_end;

-- Chat engagement: messages per 100 viewers, per stream and minute (a window join).
CREATE MATERIALIZED VIEW chat_engagement AS
SELECT c.stream_id, c.window_start, c.messages, v.avg_viewers,
       100.0 * c.messages / NULLIF(v.avg_viewers, 0) AS messages_per_100_viewers
FROM chat_per_min c
JOIN viewers_per_min v ON v.stream_id = c.stream_id AND v.window_start = c.window_start;
