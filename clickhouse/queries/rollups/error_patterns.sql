-- Repairing error_patterns after a deletion (clickhouse/deletion.py). A group is a
-- service's UTC day: it is cleared, then error_patterns_mv's own SELECT runs again over
-- the group's surviving spans.
-- affected
-- (the feedback spans about these executions go too, from whatever trace holds them)
SELECT DISTINCT (toDate(Timestamp, 'UTC'), ServiceName)
FROM otel_traces
WHERE Tenant = {tenant:String}
  AND (TraceId IN {trace_ids:Array(String)}
       OR (SpanName = 'spanhouse.feedback' AND SpanId IN {{include:feedback_span_ids}}))
-- clear
DELETE FROM error_patterns WHERE Tenant = {tenant:String}
    AND (Day, ServiceName) IN {groups:Array(Tuple(Date, String))}
-- source
SELECT * FROM otel_traces WHERE Tenant = {tenant:String}
    AND (toDate(Timestamp, 'UTC'), ServiceName) IN {groups:Array(Tuple(Date, String))}
