-- Rollup numbers of the given executions (sums over every insert of each trace).
SELECT
    TraceId AS trace_id,
    sum(Spans) AS spans,
    sum(ErrorSpans) AS error_spans,
    sum(ToolCalls) AS tool_calls,
    sum(FailedToolCalls) AS failed_tool_calls,
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    round(sum(CostUsd), 8) AS cost_usd,
    arraySort(groupUniqArrayArray(ToolNames)) AS tools
FROM execution_rollup
WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
GROUP BY TraceId
