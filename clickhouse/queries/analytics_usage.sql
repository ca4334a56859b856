-- Tokens and cost recorded in the window, from execution_rollup rows (per trace and
-- insert) whose first span is in the window, summing the model-call columns; and how
-- many of those rows carry usage of agent spans. The rollup has no time key, so this
-- reads the tenant's rows of a few narrow columns; no join with executions unless a
-- name filter asks for one. Only when some row carries agent usage does an execution's
-- figure need its trace grouped (analytics_usage_by_trace.sql): grouping every window
-- took 210 ms on 1M executions instead of 46.
SELECT
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    round(sum(CostUsd), 8) AS cost_usd,
    countIf(AgentInputTokens > 0 OR AgentOutputTokens > 0 OR AgentCostUsd > 0) AS agent_rows
FROM execution_rollup
WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
