-- Removing one feedback item ({feedback_id}). Sent over OTLP, it is a span whose id is
-- the item's: the span goes first (a stop before the last statement leaves the item
-- listed, so deleting it again finishes), with the time bounds of a trace it leaves
-- empty ({emptied}). Of the views, error_patterns alone counts a feedback span (one
-- sent with an error status; clickhouse/deletion.py recomputes its days): executions
-- and execution_rollup leave them out, and tool_calls takes one only if it also says
-- it is a tool call (gen_ai.operation.name execute_tool), which is not looked for.
DELETE FROM otel_traces WHERE Tenant = {tenant:String} AND SpanName = 'spanhouse.feedback'
    AND SpanId = {feedback_id:String};
DELETE FROM otel_traces_trace_id_ts WHERE Tenant = {tenant:String} AND TraceId IN {emptied:Array(String)};
DELETE FROM feedback WHERE Tenant = {tenant:String} AND FeedbackId = {feedback_id:String};
