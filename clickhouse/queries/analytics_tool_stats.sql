-- Per tool over the window [since, until) and the window of the same length before it
-- [prev_since, since), from the hourly rollup: calls, errors, durations and DDSketch
-- percentiles (merged states; 1% relative accuracy). Tools without a call in the
-- window, or with fewer than min_calls, are left out.
WITH Hour >= {since:DateTime} AS _current
SELECT
    ToolName AS tool,
    sumIf(Calls, _current) AS calls,
    sumIf(Errors, _current) AS errors,
    sumIf(DurationSumNs, _current) AS duration_sum_ns,
    maxIf(DurationMaxNs, _current) AS duration_max_ns,
    quantilesDDMergeIf(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles, _current) AS quantiles_ns,
    sumIf(Calls, NOT _current) AS prev_calls,
    sumIf(Errors, NOT _current) AS prev_errors,
    quantilesDDMergeIf(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles, NOT _current) AS prev_quantiles_ns,
    arraySort(groupUniqArrayIf(ServiceName, _current)) AS services
FROM tool_stats_1h
WHERE Tenant = {tenant:String} AND Hour >= {prev_since:DateTime} AND Hour < {until:DateTime} {{filters}}
GROUP BY tool
HAVING calls > 0 AND calls >= {min_calls:UInt64}
