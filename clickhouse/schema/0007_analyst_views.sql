-- Plain-number views over the aggregate tables, for analysts and dashboards: no
-- aggregate states, no FINAL to remember. Filter them by Tenant like any table.

-- Per tenant, service, tool and minute.
CREATE VIEW IF NOT EXISTS v_tool_stats_1m AS
SELECT
    Tenant,
    ServiceName,
    ToolName,
    Minute,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    calls - errors AS successes,
    round(successes / calls, 6) AS success_rate,
    round(sum(DurationSumNs) / calls / 1e6, 3) AS avg_ms,
    round(max(DurationMaxNs) / 1e6, 3) AS max_ms,
    arrayMap(q -> round(q / 1e6, 3), quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles)) AS qs,
    qs[1] AS p50_ms,
    qs[2] AS p90_ms,
    qs[3] AS p95_ms,
    qs[4] AS p99_ms
FROM tool_stats_1m
GROUP BY Tenant, ServiceName, ToolName, Minute;

-- Per tenant, service, tool and hour.
CREATE VIEW IF NOT EXISTS v_tool_stats_1h AS
SELECT
    Tenant,
    ServiceName,
    ToolName,
    Hour,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    calls - errors AS successes,
    round(successes / calls, 6) AS success_rate,
    round(sum(DurationSumNs) / calls / 1e6, 3) AS avg_ms,
    round(max(DurationMaxNs) / 1e6, 3) AS max_ms,
    arrayMap(q -> round(q / 1e6, 3), quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles)) AS qs,
    qs[1] AS p50_ms,
    qs[2] AS p90_ms,
    qs[3] AS p95_ms,
    qs[4] AS p99_ms
FROM tool_stats_1h
GROUP BY Tenant, ServiceName, ToolName, Hour;

-- Per tenant, service and tool, over everything stored (from the hourly rollup).
CREATE VIEW IF NOT EXISTS v_tool_stats AS
SELECT
    Tenant,
    ServiceName,
    ToolName,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    calls - errors AS successes,
    round(successes / calls, 6) AS success_rate,
    round(sum(DurationSumNs) / calls / 1e6, 3) AS avg_ms,
    round(max(DurationMaxNs) / 1e6, 3) AS max_ms,
    arrayMap(q -> round(q / 1e6, 3), quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles)) AS qs,
    qs[1] AS p50_ms,
    qs[2] AS p90_ms,
    qs[3] AS p95_ms,
    qs[4] AS p99_ms,
    min(Hour) AS first_seen,
    max(Hour) AS last_seen
FROM tool_stats_1h
GROUP BY Tenant, ServiceName, ToolName;

-- Latency histogram per tool and minute: one row per bucket, le_seconds = upper bound
-- (inf for the overflow bucket). For heatmaps.
CREATE VIEW IF NOT EXISTS v_tool_latency_histogram AS
SELECT
    Tenant,
    ServiceName,
    ToolName,
    Minute,
    bucket.1 AS le_seconds,
    bucket.2 AS count
FROM
(
    SELECT Tenant, ServiceName, ToolName, Minute, sumForEachMerge(LatencyBuckets) AS counts
    FROM tool_stats_1m
    GROUP BY Tenant, ServiceName, ToolName, Minute
)
ARRAY JOIN arrayZip(arrayConcat(arrayMap(b -> b / 1e9, spanhouse_latency_bounds_ns()), [inf]), counts) AS bucket;

-- Executions with their rollup numbers: the latest state of each execution.
CREATE VIEW IF NOT EXISTS v_executions AS
SELECT
    e.Tenant AS Tenant,
    e.TraceId AS TraceId,
    e.StartTime AS StartTime,
    e.ServiceName AS ServiceName,
    e.Name AS Name,
    e.Type AS Type,
    e.Status AS Status,
    e.StatusMessage AS StatusMessage,
    e.ErrorType AS ErrorType,
    round(e.DurationNs / 1e6, 3) AS duration_ms,
    e.UserId AS UserId,
    e.SessionId AS SessionId,
    e.Input AS Input,
    e.Output AS Output,
    r.spans AS spans,
    r.error_spans AS error_spans,
    r.tool_calls AS tool_calls,
    r.failed_tool_calls AS failed_tool_calls,
    r.input_tokens AS input_tokens,
    r.output_tokens AS output_tokens,
    r.cost_usd AS cost_usd,
    r.tool_names AS tool_names
FROM executions AS e FINAL
LEFT JOIN
(
    SELECT Tenant, TraceId,
           sum(Spans) AS spans, sum(ErrorSpans) AS error_spans, sum(ToolCalls) AS tool_calls,
           sum(FailedToolCalls) AS failed_tool_calls, sum(InputTokens) AS input_tokens,
           sum(OutputTokens) AS output_tokens, sum(CostUsd) AS cost_usd,
           groupUniqArrayArray(ToolNames) AS tool_names
    FROM execution_rollup
    GROUP BY Tenant, TraceId
) AS r ON r.Tenant = e.Tenant AND r.TraceId = e.TraceId;

CREATE VIEW IF NOT EXISTS v_error_patterns AS
SELECT
    Tenant, ServiceName, ToolName, IsTool, Pattern,
    sum(Count) AS count,
    min(FirstSeen) AS first_seen,
    max(LastSeen) AS last_seen,
    anyLast(SampleMessage) AS sample_message,
    anyLast(SampleTraceId) AS sample_trace_id
FROM error_patterns
GROUP BY Tenant, ServiceName, ToolName, IsTool, Pattern;
