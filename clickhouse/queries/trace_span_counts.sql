-- The spans a deletion removes, as the execution's detail and list count them: the SDK's
-- running markers (rows of their own until the execution ends) are not spans there.
SELECT countIf(NOT spanhouse_is_marker(SpanAttributes)) AS spans
FROM otel_traces
WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
