-- Tools called min_repeats+ times within one of the given executions (tool_calls of the
-- window, grouped by trace and tool; the bloom-filter index on TraceId skips granules
-- without them). Per tool: in how many executions, the most calls in one, and that
-- execution's trace id.
SELECT
    tool,
    count() AS executions,
    max(n) AS max_calls,
    sum(n) AS calls,
    argMax(trace_id, (n, trace_id)) AS example_trace_id
FROM
(
    SELECT TraceId AS trace_id, ToolName AS tool, count() AS n
    FROM tool_calls
    WHERE Tenant = {tenant:String} AND Timestamp >= toDateTime64({since:DateTime}, 9) AND Timestamp < toDateTime64({until:DateTime}, 9)
      AND TraceId IN {trace_ids:Array(String)}
    GROUP BY trace_id, tool
    HAVING n >= {min_repeats:UInt32}
)
GROUP BY tool
ORDER BY executions DESC, max_calls DESC, tool
LIMIT {limit:UInt32}
