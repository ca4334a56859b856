-- Tokens and cost recorded in the window: execution_rollup rows (per trace and insert)
-- whose first span is in the window, each trace's usage taken from its model calls, else
-- its agent spans (spanhouse_trace_usage). The rollup has no time key, so this reads
-- the tenant's rows of a few narrow columns; no join with executions unless a name
-- filter asks for one.
SELECT
    sum(usage.1) AS input_tokens,
    sum(usage.2) AS output_tokens,
    round(sum(usage.3), 8) AS cost_usd
FROM
(
    SELECT spanhouse_trace_usage(sum(InputTokens), sum(OutputTokens), sum(CostUsd),
                                 sum(AgentInputTokens), sum(AgentOutputTokens), sum(AgentCostUsd)) AS usage
    FROM execution_rollup
    WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
    GROUP BY TraceId
)
