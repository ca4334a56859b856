-- tool_calls: one narrow, typed row per tool span (any convention, see 0003).
CREATE TABLE IF NOT EXISTS tool_calls
(
    Tenant LowCardinality(String),
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String),
    ToolName LowCardinality(String),
    ToolType LowCardinality(String),
    CallId String CODEC(ZSTD(1)),
    AgentName LowCardinality(String),
    DurationNs UInt64 CODEC(T64, ZSTD(1)),
    IsError UInt8,
    ErrorType LowCardinality(String),
    ErrorMessage String CODEC(ZSTD(1)),
    Arguments String CODEC(ZSTD(3)),
    Result String CODEC(ZSTD(3)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (Tenant, ToolName, Timestamp)
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS tool_calls_mv TO tool_calls AS
SELECT
    Tenant,
    Timestamp,
    TraceId,
    SpanId,
    ParentSpanId,
    ServiceName,
    spanhouse_tool_name(SpanAttributes, SpanName) AS ToolName,
    SpanAttributes['gen_ai.tool.type'] AS ToolType,
    if(SpanAttributes['gen_ai.tool.call.id'] != '', SpanAttributes['gen_ai.tool.call.id'], SpanAttributes['tool.id']) AS CallId,
    SpanAttributes['gen_ai.agent.name'] AS AgentName,
    Duration AS DurationNs,
    spanhouse_is_error(StatusCode, SpanAttributes) AS IsError,
    spanhouse_error_type(SpanAttributes, `Events.Name`, `Events.Attributes`) AS ErrorType,
    spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`) AS ErrorMessage,
    leftUTF8(multiIf(SpanAttributes['gen_ai.tool.call.arguments'] != '', SpanAttributes['gen_ai.tool.call.arguments'],
                     SpanAttributes['input.value'] != '', SpanAttributes['input.value'],
                     SpanAttributes['traceloop.entity.input']), 1000) AS Arguments,
    leftUTF8(multiIf(SpanAttributes['gen_ai.tool.call.result'] != '', SpanAttributes['gen_ai.tool.call.result'],
                     SpanAttributes['output.value'] != '', SpanAttributes['output.value'],
                     SpanAttributes['traceloop.entity.output']), 1000) AS Result
FROM otel_traces
WHERE spanhouse_is_tool(SpanAttributes);

-- tool_stats_1m: per tenant, service, tool and minute. Quantiles are DDSketch states
-- with 1% relative accuracy (an estimate within 1% of a value at that rank); the
-- histogram uses the GenAI convention's gen_ai.execute_tool.duration bucket bounds
-- (0.01 s doubling to 81.92 s, upper bounds inclusive) plus one overflow bucket.
CREATE TABLE IF NOT EXISTS tool_stats_1m
(
    Tenant LowCardinality(String),
    ServiceName LowCardinality(String),
    ToolName LowCardinality(String),
    Minute DateTime CODEC(Delta, ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    DurationSumNs SimpleAggregateFunction(sum, UInt64),
    DurationMaxNs SimpleAggregateFunction(max, UInt64),
    DurationQuantiles AggregateFunction(quantilesDD(0.01, 0.5, 0.9, 0.95, 0.99), UInt64),
    LatencyBuckets AggregateFunction(sumForEach, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Minute)
ORDER BY (Tenant, ServiceName, ToolName, Minute)
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

-- Bucket bounds in ns, shared by the view below and the histogram views in 0008.
CREATE FUNCTION IF NOT EXISTS spanhouse_latency_bounds_ns AS () ->
    arrayMap(k -> toUInt64(10000000 * pow(2, k)), range(14));

-- A one-hot row for one duration: bucket i (1-based) counts durations in
-- (bound[i-1], bound[i]]; bucket 15 counts those above the last bound.
CREATE FUNCTION IF NOT EXISTS spanhouse_latency_bucket_row AS (duration_ns) ->
    arrayMap(i -> toUInt64(i = arrayCount(x -> duration_ns > x, spanhouse_latency_bounds_ns()) + 1), range(1, 16));

CREATE MATERIALIZED VIEW IF NOT EXISTS tool_stats_1m_mv TO tool_stats_1m AS
SELECT
    Tenant,
    ServiceName,
    ToolName,
    toStartOfMinute(Timestamp) AS Minute,
    count() AS Calls,
    sum(IsError) AS Errors,
    sum(DurationNs) AS DurationSumNs,
    max(DurationNs) AS DurationMaxNs,
    quantilesDDState(0.01, 0.5, 0.9, 0.95, 0.99)(DurationNs) AS DurationQuantiles,
    sumForEachState(spanhouse_latency_bucket_row(DurationNs)) AS LatencyBuckets
FROM tool_calls
GROUP BY Tenant, ServiceName, ToolName, Minute;

-- tool_stats_1h: the same numbers per hour, rolled up from tool_stats_1m. Merging
-- quantile states is the cost of a percentile query, so windows longer than a few
-- hours read this table (60x fewer states) and short windows read tool_stats_1m.
CREATE TABLE IF NOT EXISTS tool_stats_1h
(
    Tenant LowCardinality(String),
    ServiceName LowCardinality(String),
    ToolName LowCardinality(String),
    Hour DateTime CODEC(Delta, ZSTD(1)),
    Calls SimpleAggregateFunction(sum, UInt64),
    Errors SimpleAggregateFunction(sum, UInt64),
    DurationSumNs SimpleAggregateFunction(sum, UInt64),
    DurationMaxNs SimpleAggregateFunction(max, UInt64),
    DurationQuantiles AggregateFunction(quantilesDD(0.01, 0.5, 0.9, 0.95, 0.99), UInt64),
    LatencyBuckets AggregateFunction(sumForEach, Array(UInt64))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Hour)
ORDER BY (Tenant, ServiceName, ToolName, Hour)
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS tool_stats_1h_mv TO tool_stats_1h AS
SELECT
    Tenant,
    ServiceName,
    ToolName,
    toStartOfHour(Minute) AS Hour,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    sum(DurationSumNs) AS DurationSumNs,
    max(DurationMaxNs) AS DurationMaxNs,
    quantilesDDMergeState(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS DurationQuantiles,
    sumForEachMergeState(LatencyBuckets) AS LatencyBuckets
FROM tool_stats_1m
GROUP BY Tenant, ServiceName, ToolName, Hour;
