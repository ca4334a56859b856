-- Exact duration percentiles (the executions' rule: linear between the two nearest
-- calls) of the calls of {tools} in [since, until), per bucket of bucket_s seconds
-- aligned to UTC (one bucket, since's, when bucket_s is 0). For tools with few calls:
-- the rollups' DDSketch answers the lower of the two ranks around a quantile, so with
-- 20 calls or fewer p95 and p99 never showed the slowest. tool_calls is ordered by
-- (Tenant, ToolName, Timestamp): only those tools' calls of the window are read.
SELECT
    ToolName AS tool,
    if({bucket_s:UInt32} = 0, toDateTime({since:DateTime}, 'UTC'),
       toStartOfInterval(toDateTime(Timestamp, 'UTC'), toIntervalSecond(greatest({bucket_s:UInt32}, 1)))) AS bucket,
    quantilesExactInclusive(0.5, 0.9, 0.95, 0.99)(DurationNs) AS quantiles_ns
FROM tool_calls
WHERE Tenant = {tenant:String} AND ToolName IN {tools:Array(String)}
  AND Timestamp >= toDateTime64({since:DateTime}, 9) AND Timestamp < toDateTime64({until:DateTime}, 9) {{filters}}
GROUP BY tool, bucket
