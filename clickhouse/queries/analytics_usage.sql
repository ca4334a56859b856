-- Tokens and cost recorded in the window, from execution_rollup rows (per trace and
-- insert) whose first span is in the window: the model-call sums, the agent-span sums,
-- and the rows that decide which of the two an execution's figure is (its calls', if
-- they carry any, else its agent spans': spanhouse_trace_usage). The rollup has no
-- time key, so this reads the tenant's rows of a few narrow columns; no join with
-- executions unless a name filter asks for one. Where no row carries model-call usage,
-- every execution's figure is its agent spans'; where no row carries agent usage without
-- model-call usage beside it, every execution's figure is its calls'. Only a window
-- holding both kinds needs each trace grouped (analytics_usage_by_trace.sql: 70 ms
-- more on 1M executions), tokens and cost decided apart as the function does.
SELECT
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    round(sum(CostUsd), 8) AS cost_usd,
    sum(AgentInputTokens) AS agent_input_tokens,
    sum(AgentOutputTokens) AS agent_output_tokens,
    round(sum(AgentCostUsd), 8) AS agent_cost_usd,
    countIf(InputTokens > 0 OR OutputTokens > 0) AS call_token_rows,
    countIf(InputTokens = 0 AND OutputTokens = 0 AND (AgentInputTokens > 0 OR AgentOutputTokens > 0))
        AS agent_only_token_rows,
    countIf(CostUsd > 0) AS call_cost_rows,
    countIf(CostUsd = 0 AND AgentCostUsd > 0) AS agent_only_cost_rows
FROM execution_rollup
WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
