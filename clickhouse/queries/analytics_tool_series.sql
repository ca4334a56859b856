-- Per tool and time bucket from a rollup: calls, errors, summed duration and DDSketch
-- percentiles. `rollup` and its time column `at` are identifiers the code picks
-- (tool_stats_1m / Minute, tool_stats_1h / Hour); bucket_s (60, 3600 or 86400) is a
-- multiple of the rollup's step, aligned to UTC.
SELECT
    ToolName AS tool,
    toStartOfInterval({at:Identifier}, toIntervalSecond({bucket_s:UInt32})) AS bucket,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    sum(DurationSumNs) AS duration_sum_ns,
    quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS quantiles_ns
FROM {rollup:Identifier}
WHERE Tenant = {tenant:String} AND {at:Identifier} >= {since:DateTime} AND {at:Identifier} < {until:DateTime} {{filters}}
GROUP BY tool, bucket
ORDER BY tool, bucket
