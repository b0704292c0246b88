-- Nexmark (https://github.com/nexmark/nexmark): an online auction's people, auctions and bids,
-- generated with event time. Used by `weir demo` and the benchmarks.
CREATE SOURCE bid (
    auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
    date_time TIMESTAMP, extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.rows.per.second = '2000');

CREATE SOURCE auction (
    id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT,
    date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', nexmark.table.type = 'Auction', nexmark.rows.per.second = '100');

-- q5, first half: bids per auction in 10-second windows sliding every 2 seconds.
CREATE MATERIALIZED VIEW nexmark_q5_counts AS
SELECT auction, window_start, window_end, count(*) AS num
FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
GROUP BY auction, window_start, window_end;

-- q5, second half, as a view over the first: the highest count in each window.
CREATE MATERIALIZED VIEW nexmark_q5_hot AS
SELECT window_start, window_end, max(num) AS max_num
FROM nexmark_q5_counts
GROUP BY window_start, window_end;

-- q7's aggregate: the highest bid per 10-second tumbling window, emitted once final.
CREATE MATERIALIZED VIEW nexmark_q7_max AS
SELECT window_start, window_end, max(price) AS max_price, count(*) AS bids
FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
GROUP BY window_start, window_end
EMIT ON WINDOW CLOSE;
