-- The executions of the window that used the most tokens (input + output): candidates
-- from execution_rollup rows of the window, then their exact sums (primary-key lookup),
-- with the time range their spans cover (to bound a span lookup in otel_traces). Ties
-- at the cut are broken arbitrarily (a tie-break column would be read for every row).
-- execution_rollup holds a row per insert until its parts merge, so the window's rows
-- are grouped by trace and a trace ranked by its sums: ranked by its largest row, an
-- execution whose model calls came in several inserts lost to smaller ones stored at
-- once. The rank is spanhouse_trace_usage's tokens (the calls' if they carry any, else
-- the agent spans'), spelt with two sums, not the function's six (the two differ only
-- where a trace's input and output tokens add up past 2^64).
-- An execution's tokens are its model calls', else its agent spans' (spanhouse_trace_usage).
WITH {{include:trace_usage}} AS usage
SELECT
    TraceId AS trace_id,
    usage.1 AS input_tokens,
    usage.2 AS output_tokens,
    toUnixTimestamp(min(FirstSeen)) AS first_seen_s,
    toUnixTimestamp(max(LastSeen)) AS last_seen_s
FROM execution_rollup
WHERE Tenant = {tenant:String}
  AND TraceId IN (SELECT TraceId FROM execution_rollup
                  WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9)
                    AND greatest(InputTokens + OutputTokens, AgentInputTokens + AgentOutputTokens) > 0 {{filters}}
                  GROUP BY TraceId
                  ORDER BY if(sum(InputTokens + OutputTokens) > 0, sum(InputTokens + OutputTokens),
                              sum(AgentInputTokens + AgentOutputTokens)) DESC
                  LIMIT {limit:UInt32})
GROUP BY trace_id
HAVING input_tokens + output_tokens > 0
ORDER BY input_tokens + output_tokens DESC, trace_id
