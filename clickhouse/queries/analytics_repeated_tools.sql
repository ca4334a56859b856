-- Tools called min_repeats+ times within one of the given executions (all their calls
-- per tool, from execution_tool_calls, read by primary key; the executions start in the
-- window). Per tool: in how many executions, the most calls in one, and that
-- execution's trace id.
SELECT
    tool,
    count() AS executions,
    max(n) AS max_calls,
    sum(n) AS calls,
    argMax(trace_id, (n, trace_id)) AS example_trace_id
FROM
(
    SELECT TraceId AS trace_id, ToolName AS tool, sum(Calls) AS n
    FROM execution_tool_calls
    WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
    GROUP BY trace_id, tool
    HAVING n >= {min_repeats:UInt32}
)
GROUP BY tool
ORDER BY executions DESC, max_calls DESC, tool
LIMIT {limit:UInt32}
