-- Tool leaderboards (GET /tools, the performance tips) merged the DDSketch state of every
-- tool and hour of their window from tool_stats_1h: at 10M spans, 44 ms of the
-- performance call, nearly all of it decoding states, as a state column is decoded a
-- whole granule (thousands of rows) at a time. Two rollups take that over
-- (clickhouse/queries/analytics_tool_stats.sql): tool_stats_1d holds a window's whole
-- UTC days (24x fewer states) and tool_stats_1h_by_time the hours around them, ordered
-- by time in granules of 256 rows, so that reading a few hours decodes little more than
-- those hours. Time is the hour, or the day, the row covers. Neither keeps the latency
-- histogram: nothing reads it there. The views copy rows as they come (one per hour and
-- tool); merges add them up. Deleting executions rebuilds the hours they touched, and
-- then their days whole (clickhouse/deletion.py).
CREATE TABLE IF NOT EXISTS tool_stats_1h_by_time
(
    Tenant LowCardinality(String),
    Time DateTime('UTC') CODEC(Delta, ZSTD(1)),
    ServiceName LowCardinality(String),
    ToolName LowCardinality(String),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    DurationSumNs SimpleAggregateFunction(sum, UInt64),
    DurationMaxNs SimpleAggregateFunction(max, UInt64),
    DurationQuantiles AggregateFunction(quantilesDD(0.01, 0.5, 0.9, 0.95, 0.99), UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Time)
ORDER BY (Tenant, Time, ServiceName, ToolName)
SETTINGS index_granularity = 256, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS tool_stats_1d AS tool_stats_1h_by_time
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Time)
ORDER BY (Tenant, Time, ServiceName, ToolName)
SETTINGS index_granularity = 256, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS tool_stats_1h_by_time_mv TO tool_stats_1h_by_time AS
SELECT Tenant, Hour AS Time, ServiceName, ToolName, Calls, Errors, DurationSumNs, DurationMaxNs, DurationQuantiles
FROM tool_stats_1h;

CREATE MATERIALIZED VIEW IF NOT EXISTS tool_stats_1d_mv TO tool_stats_1d AS
SELECT Tenant, toStartOfDay(Time, 'UTC') AS Time, ServiceName, ToolName, Calls, Errors, DurationSumNs, DurationMaxNs,
       DurationQuantiles
FROM tool_stats_1h_by_time;

-- What was stored before this migration (the views see only later inserts; the daily
-- view takes these rows too), for the keys not in the table yet: running the file again
-- adds nothing twice, though after a run that failed partway a key it reached keeps what
-- it got. A writer inserting while this runs could have a key's later rows here already
-- and its earlier ones left out; the collector migrates before it listens. GLOBAL: on a
-- cluster both sides are Distributed tables.
INSERT INTO tool_stats_1h_by_time
SELECT Tenant, Hour AS Time, ServiceName, ToolName, Calls, Errors, DurationSumNs, DurationMaxNs, DurationQuantiles
FROM tool_stats_1h
WHERE (Tenant, Hour, ServiceName, ToolName)
    GLOBAL NOT IN (SELECT Tenant, Time, ServiceName, ToolName FROM tool_stats_1h_by_time)
