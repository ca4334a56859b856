-- Tokens and cost recorded in the window: execution_rollup rows (per trace and insert)
-- whose first span is in the window. The rollup has no time key, so this reads the
-- tenant's rows of a few narrow columns; no join with executions unless a name filter
-- asks for one.
SELECT
    sum(InputTokens) AS input_tokens,
    sum(OutputTokens) AS output_tokens,
    round(sum(CostUsd), 8) AS cost_usd
FROM execution_rollup
WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
