-- Traces holding nothing but feedback spans about the given executions (the SDK sends
-- feedback as a span of a trace of its own; feedback.FeedbackId is that span's id):
-- deleting an execution deletes them with it, so its feedback leaves nothing behind. A
-- trace also holding feedback about another execution stays (its span about the deleted
-- one goes with the feedback rows): deleting it took the other execution's rating too.
-- A span is told by the execution it rates, not its id alone (a client may send one id
-- in several traces).
SELECT TraceId AS trace_id
FROM otel_traces
WHERE Tenant = {tenant:String}
  AND TraceId IN (SELECT TraceId FROM otel_traces
                  WHERE Tenant = {tenant:String} AND SpanName = 'spanhouse.feedback'
                    AND SpanId IN {{include:feedback_span_ids}}
                    AND {{include:feedback_rated_trace}} IN {trace_ids:Array(String)})
GROUP BY TraceId
HAVING countIf(SpanName != 'spanhouse.feedback' OR {{include:feedback_rated_trace}} NOT IN {trace_ids:Array(String)}) = 0
