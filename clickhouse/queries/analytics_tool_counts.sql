-- analytics_tool_series without the percentiles: calls and errors per tool and bucket,
-- no quantile states to read (the error-rate anomalies need nothing else).
SELECT ToolName AS tool, toStartOfInterval({at:Identifier}, toIntervalSecond({bucket_s:UInt32})) AS bucket,
       sum(Calls) AS calls, sum(Errors) AS errors
FROM {rollup:Identifier}
WHERE Tenant = {tenant:String} AND {at:Identifier} >= {since:DateTime} AND {at:Identifier} < {until:DateTime} {{filters}}
GROUP BY tool, bucket
ORDER BY tool, bucket
