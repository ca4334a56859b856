-- Tokens and cost recorded in the window: execution_rollup rows (per trace and insert)
-- whose first span is in the window. The rollup has no time key, so this reads the
-- tenant's rows of a few narrow columns; no join with executions unless a name filter
-- asks for one.
-- An execution's usage is its model calls', else its agent spans' (spanhouse_trace_usage).
-- Taking that per trace means grouping by trace: over a million executions that took
-- 210 ms instead of 46. So the model columns are summed over all rows, and only the
-- traces with usage on agent spans are grouped, to add the agent tokens (cost) of those
-- whose calls carry none. A window takes the rows whose first span it holds, so a window
-- edge between an agent span's insert and its calls' can count both, one on each side.
SELECT
    m.input_tokens + a.input_tokens AS input_tokens,
    m.output_tokens + a.output_tokens AS output_tokens,
    round(m.cost_usd + a.cost_usd, 8) AS cost_usd
FROM
(
    SELECT sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens, sum(CostUsd) AS cost_usd
    FROM execution_rollup
    WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
) AS m
CROSS JOIN
(
    SELECT sumIf(agent_in, NOT model_tokens) AS input_tokens, sumIf(agent_out, NOT model_tokens) AS output_tokens,
           sumIf(agent_cost, NOT model_cost) AS cost_usd
    FROM
    (
        SELECT sum(AgentInputTokens) AS agent_in, sum(AgentOutputTokens) AS agent_out, sum(AgentCostUsd) AS agent_cost,
               sum(InputTokens) > 0 OR sum(OutputTokens) > 0 AS model_tokens, sum(CostUsd) > 0 AS model_cost
        FROM execution_rollup
        WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9) AND FirstSeen < toDateTime64({until:DateTime}, 9) {{filters}}
          AND TraceId IN (SELECT TraceId FROM execution_rollup
                          WHERE Tenant = {tenant:String} AND FirstSeen >= toDateTime64({since:DateTime}, 9)
                            AND FirstSeen < toDateTime64({until:DateTime}, 9)
                            AND (AgentInputTokens > 0 OR AgentOutputTokens > 0 OR AgentCostUsd > 0))
        GROUP BY TraceId
    )
) AS a
