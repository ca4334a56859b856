-- Removing traces: every table keyed by trace. Aggregate tables (tool_stats_*,
-- error_patterns) are recomputed by clickhouse/deletion.py from what remains.
-- Feedback spans about these executions sent inside other traces (before the feedback
-- rows that name them go: feedback.FeedbackId is the span's id); feedback-only traces
-- are among trace_ids already. A span is matched by its id and the execution it rates:
-- a client with deterministic ids may send one id in several traces, about others.
DELETE FROM otel_traces WHERE Tenant = {tenant:String} AND SpanName = 'spanhouse.feedback'
    AND SpanId IN {{include:feedback_span_ids}}
    AND {{include:feedback_rated_trace}} IN {trace_ids:Array(String)};
-- Feedback carried by a span of these traces goes with its span, whichever execution it
-- rates (a judge's rating sent from its own execution's trace; the SDK's feedback trace
-- deleted by its id): the span went and its rating stayed, in the rated execution's detail.
DELETE FROM feedback WHERE Tenant = {tenant:String} AND Source = 'otlp'
    AND (TraceId, FeedbackId) IN (SELECT {{include:feedback_rated_trace}}, SpanId FROM otel_traces
                                  WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
                                    AND SpanName = 'spanhouse.feedback');
DELETE FROM otel_traces WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
DELETE FROM otel_traces_trace_id_ts WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
DELETE FROM tool_calls WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
DELETE FROM executions WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
DELETE FROM execution_rollup WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
DELETE FROM execution_tool_calls WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
DELETE FROM feedback WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)};
