-- Per tool and minute from the minute rollup: calls, errors, summed duration and
-- DDSketch percentiles.
SELECT
    ToolName AS tool,
    Minute AS bucket,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    sum(DurationSumNs) AS duration_sum_ns,
    quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS quantiles_ns
FROM tool_stats_1m
WHERE Tenant = {tenant:String} AND Minute >= {since:DateTime} AND Minute < {until:DateTime} {{filters}}
GROUP BY tool, bucket
ORDER BY tool, bucket
