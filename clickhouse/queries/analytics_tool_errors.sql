-- The newest failed calls of one tool in the window.
SELECT
    Timestamp AS time,
    TraceId AS trace_id,
    SpanId AS span_id,
    ServiceName AS service,
    ErrorType AS error_type,
    ErrorMessage AS message,
    round(DurationNs / 1e6, 3) AS duration_ms
FROM tool_calls
WHERE Tenant = {tenant:String} AND ToolName = {tool:String} AND IsError
  AND Timestamp >= toDateTime64({since:DateTime}, 9) AND Timestamp < toDateTime64({until:DateTime}, 9)
ORDER BY Timestamp DESC, SpanId DESC
LIMIT {limit:UInt32}
