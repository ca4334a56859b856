-- Rollup numbers of the given executions (sums over every insert of each trace; usage
-- from the model calls, else the agent spans: spanhouse_trace_usage).
WITH {{include:trace_usage}} AS usage
SELECT
    TraceId AS trace_id,
    sum(Spans) AS spans,
    sum(ErrorSpans) AS error_spans,
    sum(ToolCalls) AS tool_calls,
    sum(FailedToolCalls) AS failed_tool_calls,
    usage.1 AS input_tokens,
    usage.2 AS output_tokens,
    round(usage.3, 8) AS cost_usd,
    arraySort(groupUniqArrayArray(ToolNames)) AS tools
FROM execution_rollup
WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
GROUP BY TraceId
