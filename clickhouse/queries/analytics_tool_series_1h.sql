-- Per tool and time bucket (bucket_s seconds: 3600 or 86400, aligned to UTC) from the
-- hourly rollup: calls, errors, summed duration and DDSketch percentiles.
SELECT
    ToolName AS tool,
    toStartOfInterval(Hour, toIntervalSecond({bucket_s:UInt32})) AS bucket,
    sum(Calls) AS calls,
    sum(Errors) AS errors,
    sum(DurationSumNs) AS duration_sum_ns,
    quantilesDDMerge(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS quantiles_ns
FROM tool_stats_1h
WHERE Tenant = {tenant:String} AND Hour >= {since:DateTime} AND Hour < {until:DateTime} {{filters}}
GROUP BY tool, bucket
ORDER BY tool, bucket
