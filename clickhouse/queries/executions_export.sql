-- One page of an export: executions with their rollup numbers (the fields the list gives),
-- in the requested format.
-- The page is the filters' "cursor" (below the last page) and "through" (down to this
-- page's last execution, executions_export_bound); its rollups are read for its own
-- executions only.
-- Times in text formats are ISO 8601 in UTC (2025-11-18T21:06:40.000000000Z), as the
-- rest of the API returns them; Parquet keeps its timestamp type.
SELECT
{{include:execution_columns}},
{{include:execution_text_columns}},
    r.spans AS spans,
    r.error_spans AS error_spans,
    r.tool_calls AS tool_calls,
    r.failed_tool_calls AS failed_tool_calls,
    r.input_tokens AS input_tokens,
    r.output_tokens AS output_tokens,
    r.cost_usd AS cost_usd,
    r.tools AS tools
FROM executions AS e FINAL
LEFT JOIN
(
    SELECT TraceId, sum(Spans) AS spans, sum(ErrorSpans) AS error_spans, sum(ToolCalls) AS tool_calls,
           sum(FailedToolCalls) AS failed_tool_calls, arraySort(groupUniqArrayArray(ToolNames)) AS tools,
           {{include:trace_usage}} AS usage,
           usage.1 AS input_tokens, usage.2 AS output_tokens, round(usage.3, 8) AS cost_usd
    FROM execution_rollup
    WHERE Tenant = {tenant:String}
      AND TraceId IN (SELECT e.TraceId FROM executions AS e WHERE e.Tenant = {tenant:String} {{filters}})
    GROUP BY TraceId
) AS r ON r.TraceId = e.TraceId
WHERE e.Tenant = {tenant:String} {{filters}}
ORDER BY e.StartTime DESC, e.TraceId DESC
SETTINGS date_time_output_format = 'iso'
