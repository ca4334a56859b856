-- Every span of one execution, for the span tree. The trace-id lookup table bounds the
-- time range so only that trace's partitions are read.
WITH
    (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = {trace_id:String} AND Tenant = {tenant:String}) AS t_start,
    (SELECT max(End) + 1 FROM otel_traces_trace_id_ts WHERE TraceId = {trace_id:String} AND Tenant = {tenant:String}) AS t_end
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
    SpanAttributes AS attributes,
    spanhouse_is_tool(SpanAttributes) AS is_tool,
    if(spanhouse_is_tool(SpanAttributes), spanhouse_tool_name(SpanAttributes, SpanName), '') AS tool_name,
    spanhouse_is_error(StatusCode, SpanAttributes) AS is_error,
    spanhouse_is_marker(SpanAttributes) AS is_marker,
    arrayMap((n, t, a) -> (n, t, a), `Events.Name`, `Events.Timestamp`, `Events.Attributes`) AS events
FROM otel_traces
WHERE Tenant = {tenant:String} AND TraceId = {trace_id:String}
  AND Timestamp >= t_start AND Timestamp <= t_end
ORDER BY Timestamp, SpanId
