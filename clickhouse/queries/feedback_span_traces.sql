-- The traces holding the OTLP feedback span {feedback_id} (one, unless a client sent
-- the span id again in another trace): its spans there, how many of them failed (they
-- count in error_patterns), and whether the trace holds nothing else (the SDK sends
-- feedback as a trace of its own): such a trace's row of otel_traces_trace_id_ts goes
-- with the span.
SELECT TraceId AS trace_id,
       countIf(SpanName = 'spanhouse.feedback' AND SpanId = {feedback_id:String}) AS spans,
       countIf(SpanName = 'spanhouse.feedback' AND SpanId = {feedback_id:String}
               AND spanhouse_is_error(StatusCode, SpanAttributes)) AS errors,
       spans = count() AS alone
FROM otel_traces
WHERE Tenant = {tenant:String}
  AND TraceId IN (SELECT TraceId FROM otel_traces
                  WHERE Tenant = {tenant:String} AND SpanName = 'spanhouse.feedback' AND SpanId = {feedback_id:String})
GROUP BY TraceId
