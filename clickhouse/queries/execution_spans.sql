-- The spans of one execution, for the span tree: the first {limit} by start time, within
-- the execution's time range (execution_bounds.sql) so only those partitions and granules
-- are read. ORDER BY ... LIMIT also lets ClickHouse read the wide columns (the attribute
-- maps) for the matching rows only instead of whole granules (lazy materialization, which
-- applies up to query_plan_max_limit_for_lazy_materialization rows).
-- The bounds are compared as DateTime64: against a DateTime bound, ClickHouse's index
-- analysis of the DateTime64 Timestamp skipped parts holding only spans of the last
-- second (checked in tests/test_history_detail.py); every DateTime64 column here and in
-- the analytics queries is compared with toDateTime64(bound, 9) for that reason.
SELECT
    SpanId AS span_id,
    ParentSpanId AS parent_span_id,
    SpanName AS name,
    SpanKind AS kind,
    ServiceName AS service,
    Timestamp AS start_time,
    Duration / 1e6 AS duration_ms,
    StatusCode AS status_code,
    StatusMessage AS status_message,
    spanhouse_first_entries(SpanAttributes) AS attributes,
    spanhouse_is_tool(SpanAttributes) AS is_tool,
    if(spanhouse_is_tool(SpanAttributes), spanhouse_tool_name(SpanAttributes, SpanName), '') AS tool_name,
    spanhouse_tool_arguments(SpanAttributes) AS tool_arguments,
    spanhouse_tool_result(SpanAttributes) AS tool_result,
    spanhouse_input_tokens(SpanAttributes) AS input_tokens,
    spanhouse_output_tokens(SpanAttributes) AS output_tokens,
    spanhouse_cost_usd(SpanAttributes) AS cost_usd,
    spanhouse_is_error(StatusCode, SpanAttributes) AS is_error,
    spanhouse_failure_type(StatusCode, SpanAttributes, `Events.Name`, `Events.Attributes`) AS error_type,
    spanhouse_is_marker(SpanAttributes) AS is_marker,
    arrayMap((n, t, a) -> (n, t, spanhouse_first_entries(a)), `Events.Name`, `Events.Timestamp`, `Events.Attributes`)
        AS events
FROM otel_traces
WHERE Tenant = {tenant:String} AND TraceId = {trace_id:String}
  AND Timestamp >= toDateTime64({since:DateTime}, 9) AND Timestamp < toDateTime64({until:DateTime}, 9)
ORDER BY Timestamp, SpanId
LIMIT {limit:UInt32}
