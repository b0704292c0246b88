-- Live-stream chat analytics over generated chat messages (datagen).
CREATE SOURCE chat (
    stream_id VARCHAR, user_id VARCHAR, message VARCHAR, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    connector = 'datagen',
    datagen.rows.per.second = '200',
    datagen.split.num = '2',
    fields.stream_id.kind = 'random',
    fields.stream_id.values = 'lofi_beats,speedrun_any,chess_blitz,cooking_live,retro_games',
    fields.user_id.kind = 'random',
    fields.user_id.values = 'ada,bo,cy,dee,eli,fay,gus,hal,ivy,jo,kit,lu,max,nia,oz',
    fields.message.kind = 'random',
    fields.message.length = '16',
    fields.ts.kind = 'event_time',
    fields.ts.disorder = '2s'
);

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

-- How unusual is each stream's minute? z = (messages - mean) / stddev over the same stream's
-- previous 10 minutes: the per-minute view joined with itself on a time interval, emitted once
-- per minute when it closes. `anomaly` flags |z| > 3 (NULL while the previous minutes did not vary).
CREATE MATERIALIZED VIEW chat_zscore AS
SELECT cur.stream_id, cur.window_start, cur.messages,
       avg(prev.messages) AS mean_10m,
       stddev_samp(prev.messages) AS stddev_10m,
       (cur.messages - avg(prev.messages)) / NULLIF(stddev_samp(prev.messages), 0) AS z,
       abs((cur.messages - avg(prev.messages)) / NULLIF(stddev_samp(prev.messages), 0)) > 3.0 AS anomaly
FROM chat_per_min cur
JOIN chat_per_min prev
  ON prev.stream_id = cur.stream_id
 AND prev.window_start BETWEEN cur.window_start - INTERVAL '10' MINUTE AND cur.window_start - INTERVAL '1' MINUTE
GROUP BY cur.stream_id, cur.window_start, cur.messages
EMIT ON WINDOW CLOSE;
