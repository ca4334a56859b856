-- One tool from the hourly rollup, in one read of its quantile states: a row per time
-- bucket (bucket_s seconds: 3600 or 86400, aligned to UTC) and a total row
-- (is_total = 1). Every row has the numbers of the window [since, until) and of the
-- window of the same length before it [prev_since, since), for the trend; buckets
-- before `since` have no calls of the window and are dropped by the caller.
WITH Hour >= {since:DateTime} AS _current
SELECT
    {tool:String} AS tool,
    toStartOfInterval(Hour, toIntervalSecond({bucket_s:UInt32})) AS bucket,
    grouping(bucket) = 1 AS is_total,
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
WHERE Tenant = {tenant:String} AND ToolName = {tool:String}
  AND Hour >= {prev_since:DateTime} AND Hour < {until:DateTime}
GROUP BY GROUPING SETS ((bucket), ())
ORDER BY is_total, bucket
