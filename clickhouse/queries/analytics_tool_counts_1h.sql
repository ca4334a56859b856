-- Per tool and time bucket (bucket_s seconds: 3600 or 86400, aligned to UTC) from the
-- hourly rollup: calls and errors only (no quantile states to read).
SELECT
    ToolName AS tool,
    toStartOfInterval(Hour, toIntervalSecond({bucket_s:UInt32})) AS bucket,
    sum(Calls) AS calls,
    sum(Errors) AS errors
FROM tool_stats_1h
WHERE Tenant = {tenant:String} AND Hour >= {since:DateTime} AND Hour < {until:DateTime} {{filters}}
GROUP BY tool, bucket
ORDER BY tool, bucket
