-- executions: one row per execution (trace), from its root span (ParentSpanId = '').
-- The SDK exports a start marker (spanhouse.execution.state = 'running') with the same
-- start time as the execution, so a running execution is listed before it ends; the
-- finished root span (Version 1) replaces the marker (Version 0) on merge, and readers
-- use FINAL or argMax(…, Version).
CREATE TABLE IF NOT EXISTS executions
(
    Tenant LowCardinality(String),
    StartTime DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ServiceName LowCardinality(String),
    Name LowCardinality(String),
    SpanName LowCardinality(String),
    Type LowCardinality(String),
    Status LowCardinality(String),
    StatusMessage String CODEC(ZSTD(1)),
    ErrorType LowCardinality(String),
    DurationNs UInt64 CODEC(T64, ZSTD(1)),
    UserId String CODEC(ZSTD(1)),
    SessionId String CODEC(ZSTD(1)),
    Input String CODEC(ZSTD(3)),
    Output String CODEC(ZSTD(3)),
    Version UInt8,
    InsertedAt DateTime64(3) DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_user UserId TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_session SessionId TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(Version)
PARTITION BY toYYYYMM(StartTime)
ORDER BY (Tenant, StartTime, TraceId)
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS executions_mv TO executions AS
SELECT
    Tenant,
    Timestamp AS StartTime,
    TraceId,
    SpanId,
    ServiceName,
    multiIf(SpanAttributes['gen_ai.workflow.name'] != '', SpanAttributes['gen_ai.workflow.name'],
            SpanAttributes['gen_ai.agent.name'] != '', SpanAttributes['gen_ai.agent.name'],
            SpanAttributes['traceloop.entity.name'] != '', SpanAttributes['traceloop.entity.name'],
            SpanName) AS Name,
    SpanName,
    multiIf(SpanAttributes['gen_ai.operation.name'] != '', SpanAttributes['gen_ai.operation.name'],
            SpanAttributes['openinference.span.kind'] != '', lower(SpanAttributes['openinference.span.kind']),
            SpanAttributes['traceloop.span.kind'] != '', SpanAttributes['traceloop.span.kind'],
            'span') AS Type,
    multiIf(spanhouse_is_marker(SpanAttributes), 'running',
            spanhouse_is_error(StatusCode, SpanAttributes), 'error', 'ok') AS Status,
    spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`) AS StatusMessage,
    spanhouse_error_type(SpanAttributes, `Events.Name`, `Events.Attributes`) AS ErrorType,
    if(spanhouse_is_marker(SpanAttributes), 0, Duration) AS DurationNs,
    multiIf(SpanAttributes['user.id'] != '', SpanAttributes['user.id'],
            SpanAttributes['enduser.id'] != '', SpanAttributes['enduser.id'], ResourceAttributes['user.id']) AS UserId,
    multiIf(SpanAttributes['session.id'] != '', SpanAttributes['session.id'],
            SpanAttributes['gen_ai.conversation.id']) AS SessionId,
    leftUTF8(multiIf(SpanAttributes['input.value'] != '', SpanAttributes['input.value'],
                     SpanAttributes['spanhouse.input'] != '', SpanAttributes['spanhouse.input'],
                     SpanAttributes['gen_ai.input.messages'] != '', SpanAttributes['gen_ai.input.messages'],
                     SpanAttributes['traceloop.entity.input']), 1000) AS Input,
    leftUTF8(multiIf(SpanAttributes['output.value'] != '', SpanAttributes['output.value'],
                     SpanAttributes['spanhouse.output'] != '', SpanAttributes['spanhouse.output'],
                     SpanAttributes['gen_ai.output.messages'] != '', SpanAttributes['gen_ai.output.messages'],
                     SpanAttributes['traceloop.entity.output']), 1000) AS Output,
    if(spanhouse_is_marker(SpanAttributes), 0, 1) AS Version
FROM otel_traces
WHERE ParentSpanId = '' AND SpanName != 'spanhouse.feedback';

-- execution_rollup: per trace, over ALL its spans. Every column is a sum, min, max or
-- union, so the result is the same however the trace's spans are split across inserts
-- and in whatever order they arrive; readers aggregate (sum/min/max) or use FINAL.
CREATE TABLE IF NOT EXISTS execution_rollup
(
    Tenant LowCardinality(String),
    TraceId String CODEC(ZSTD(1)),
    Spans SimpleAggregateFunction(sum, UInt64),
    ErrorSpans SimpleAggregateFunction(sum, UInt64),
    ToolCalls SimpleAggregateFunction(sum, UInt64),
    FailedToolCalls SimpleAggregateFunction(sum, UInt64),
    InputTokens SimpleAggregateFunction(sum, UInt64),
    OutputTokens SimpleAggregateFunction(sum, UInt64),
    CostUsd SimpleAggregateFunction(sum, Float64),
    FirstSeen SimpleAggregateFunction(min, DateTime64(9)),
    LastSeen SimpleAggregateFunction(max, DateTime64(9)),
    ToolNames SimpleAggregateFunction(groupUniqArrayArray, Array(String))
)
ENGINE = AggregatingMergeTree
ORDER BY (Tenant, TraceId)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS execution_rollup_mv TO execution_rollup AS
SELECT
    Tenant,
    TraceId,
    count() AS Spans,
    countIf(spanhouse_is_error(StatusCode, SpanAttributes)) AS ErrorSpans,
    countIf(spanhouse_is_tool(SpanAttributes)) AS ToolCalls,
    countIf(spanhouse_is_tool(SpanAttributes) AND spanhouse_is_error(StatusCode, SpanAttributes)) AS FailedToolCalls,
    sum(spanhouse_input_tokens(SpanAttributes)) AS InputTokens,
    sum(spanhouse_output_tokens(SpanAttributes)) AS OutputTokens,
    sum(spanhouse_cost_usd(SpanAttributes)) AS CostUsd,
    min(Timestamp) AS FirstSeen,
    max(Timestamp + toIntervalNanosecond(Duration)) AS LastSeen,
    groupUniqArrayIf(spanhouse_tool_name(SpanAttributes, SpanName), spanhouse_is_tool(SpanAttributes)) AS ToolNames
FROM otel_traces
WHERE NOT spanhouse_is_marker(SpanAttributes) AND SpanName != 'spanhouse.feedback'
GROUP BY Tenant, TraceId;
