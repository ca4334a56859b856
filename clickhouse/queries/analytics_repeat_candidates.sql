-- Executions of the window that can have called one tool min_repeats+ times: a tool
-- called k times among u distinct tools means ToolCalls >= k + u - 1 (execution_rollup
-- rows whose first span is in the window). The `limit` with the most repeated calls,
-- and how many there are in all.
SELECT TraceId AS trace_id, ToolCalls - length(ToolNames) AS excess, count() OVER () AS candidates
FROM execution_rollup
WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9)
  AND ToolCalls + 1 >= length(ToolNames) + {min_repeats:UInt32} {{filters}}
ORDER BY excess DESC
LIMIT {limit:UInt32}
