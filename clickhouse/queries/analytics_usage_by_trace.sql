-- analytics_usage.sql's figures when some rows of the window carry usage of agent
-- spans: each trace's rows of the window grouped, its usage its model calls', else its
-- agent spans' (spanhouse_trace_usage). A window takes the rows whose first span it
-- holds, so a window edge between an agent span's insert and its calls' can count
-- both, one on each side.
SELECT
    sum(usage.1) AS input_tokens,
    sum(usage.2) AS output_tokens,
    round(sum(usage.3), 8) AS cost_usd
FROM
(
    SELECT {{include:trace_usage}} AS usage
    FROM execution_rollup
    WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
    GROUP BY TraceId
)
