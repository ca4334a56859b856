-- The executions of the window that used the most tokens (input + output): candidates
-- from execution_rollup rows of the window, then their exact sums (primary-key lookup),
-- with the time range their spans cover (to bound a span lookup in otel_traces). Ties
-- at the cut are broken arbitrarily (a tie-break column would be read for every row).
SELECT
    TraceId AS trace_id,
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    toUnixTimestamp(min(FirstSeen)) AS first_seen_s,
    toUnixTimestamp(max(LastSeen)) AS last_seen_s
FROM execution_rollup
WHERE Tenant = {tenant:String}
  AND TraceId IN (SELECT TraceId FROM execution_rollup
                  WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9)
                    AND InputTokens + OutputTokens > 0 {{filters}}
                  ORDER BY InputTokens + OutputTokens DESC
                  LIMIT {limit:UInt32})
GROUP BY trace_id
ORDER BY input_tokens + output_tokens DESC, trace_id
