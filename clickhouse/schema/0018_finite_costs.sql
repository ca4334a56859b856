-- Costs that are numbers. spanhouse_cost_usd read any text: a span whose
-- spanhouse.cost_usd (or llm.cost.total) said 'NaN' or 'inf' (any OTLP client can send
-- that) put NaN or infinity into its execution's rollup, whose sums keep it for good:
-- the execution's cost, and every window's cost total of its tenant, read null from
-- then on. Two spans near 1e308 overflowed the sum to infinity alike. A span's cost now
-- counts only when it is a finite number from 0 to a trillion USD; anything else is 0.
CREATE FUNCTION IF NOT EXISTS spanhouse_usd AS (c) -> if(isFinite(c) AND c >= 0 AND c < 1e12, c, 0);

CREATE OR REPLACE FUNCTION spanhouse_cost_usd AS (attrs) ->
    spanhouse_usd(toFloat64OrZero(if(attrs['spanhouse.cost_usd'] != '', attrs['spanhouse.cost_usd'],
                                     attrs['llm.cost.total'])));

-- 0005's view again: a view holds the functions it calls as they were when its query
-- was set, so it takes the new one only with its query set again (an atomic swap: no
-- insert is missed).
ALTER TABLE execution_rollup_mv MODIFY QUERY
SELECT
    Tenant,
    TraceId,
    count() AS Spans,
    countIf(spanhouse_is_error(StatusCode, SpanAttributes)) AS ErrorSpans,
    countIf(spanhouse_is_tool(SpanAttributes)) AS ToolCalls,
    countIf(spanhouse_is_tool(SpanAttributes) AND spanhouse_is_error(StatusCode, SpanAttributes)) AS FailedToolCalls,
    sum(spanhouse_input_tokens(SpanAttributes)) AS InputTokens,
    sum(spanhouse_output_tokens(SpanAttributes)) AS OutputTokens,
    sum(spanhouse_cost_usd(SpanAttributes)) AS CostUsd,
    min(Timestamp) AS FirstSeen,
    max(Timestamp + toIntervalNanosecond(Duration)) AS LastSeen,
    groupUniqArrayIf(spanhouse_tool_name(SpanAttributes, SpanName), spanhouse_is_tool(SpanAttributes)) AS ToolNames
FROM otel_traces
WHERE NOT spanhouse_is_marker(SpanAttributes) AND SpanName != 'spanhouse.feedback'
GROUP BY Tenant, TraceId;

-- A rollup row already holding NaN or infinity cannot be told apart into its spans'
-- costs any more (the mutation may not read otel_traces): its cost becomes 0, as an
-- unknown one; its other figures are kept.
ALTER TABLE execution_rollup UPDATE CostUsd = 0 WHERE NOT isFinite(CostUsd) SETTINGS mutations_sync = 2;
