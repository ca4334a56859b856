-- error_patterns: failures per tenant, day, service, tool (or span name for spans that
-- are not tool calls) and pattern: error.type when set, else the message with ids,
-- numbers and quoted values replaced (spanhouse_error_pattern).
CREATE TABLE IF NOT EXISTS error_patterns
(
    Tenant LowCardinality(String),
    Day Date,
    ServiceName LowCardinality(String),
    ToolName LowCardinality(String),
    IsTool UInt8,
    Pattern String,
    Count SimpleAggregateFunction(sum, UInt64),
    FirstSeen SimpleAggregateFunction(min, DateTime64(9)),
    LastSeen SimpleAggregateFunction(max, DateTime64(9)),
    SampleMessage SimpleAggregateFunction(anyLast, String),
    SampleTraceId SimpleAggregateFunction(anyLast, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(Day)
ORDER BY (Tenant, Day, ServiceName, ToolName, IsTool, Pattern)
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS error_patterns_mv TO error_patterns AS
SELECT
    Tenant,
    toDate(Timestamp) AS Day,
    ServiceName,
    if(spanhouse_is_tool(SpanAttributes), spanhouse_tool_name(SpanAttributes, SpanName), SpanName) AS ToolName,
    spanhouse_is_tool(SpanAttributes) AS IsTool,
    spanhouse_error_pattern(spanhouse_error_type(SpanAttributes, `Events.Name`, `Events.Attributes`),
                            spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS Pattern,
    count() AS Count,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen,
    anyLast(spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS SampleMessage,
    anyLast(TraceId) AS SampleTraceId
FROM otel_traces
WHERE spanhouse_is_error(StatusCode, SpanAttributes)
GROUP BY Tenant, Day, ServiceName, ToolName, IsTool, Pattern;

-- feedback: ratings, named scores and comments on executions. Any OTLP client can send
-- feedback as a span named spanhouse.feedback carrying spanhouse.feedback.* attributes
-- (the execution it rates: spanhouse.feedback.execution_id, else its first link, else
-- its own trace); the query API inserts rows here directly (Source 'api').
CREATE TABLE IF NOT EXISTS feedback
(
    Tenant LowCardinality(String),
    TraceId String CODEC(ZSTD(1)),
    FeedbackId String CODEC(ZSTD(1)),
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    Name LowCardinality(String),
    Value Float64,
    Comment String CODEC(ZSTD(3)),
    UserId String CODEC(ZSTD(1)),
    Source LowCardinality(String)
)
ENGINE = ReplacingMergeTree(Timestamp)
ORDER BY (Tenant, TraceId, Name, FeedbackId)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS feedback_mv TO feedback AS
SELECT
    Tenant,
    multiIf(SpanAttributes['spanhouse.feedback.execution_id'] != '', lower(SpanAttributes['spanhouse.feedback.execution_id']),
            notEmpty(`Links.TraceId`), `Links.TraceId`[1],
            TraceId) AS TraceId,
    SpanId AS FeedbackId,
    Timestamp,
    if(SpanAttributes['spanhouse.feedback.name'] != '', SpanAttributes['spanhouse.feedback.name'], 'user_rating') AS Name,
    toFloat64OrZero(SpanAttributes['spanhouse.feedback.value']) AS Value,
    SpanAttributes['spanhouse.feedback.comment'] AS Comment,
    if(SpanAttributes['user.id'] != '', SpanAttributes['user.id'], SpanAttributes['enduser.id']) AS UserId,
    'otlp' AS Source
FROM otel_traces
WHERE SpanName = 'spanhouse.feedback';
