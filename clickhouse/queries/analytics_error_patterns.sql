-- The most frequent error patterns of the window. error_patterns counts per UTC day, so
-- the window runs from the beginning of the day holding `since` to the end of the day
-- holding its last second (`until` is exclusive: a window ending at midnight ends the day
-- before).
SELECT
    ToolName AS tool,
    IsTool AS is_tool,
    Pattern AS pattern,
    sum(Count) AS count,
    min(FirstSeen) AS first_seen,
    max(LastSeen) AS last_seen,
    argMax(SampleMessage, LastSeen) AS sample_message,
    argMax(SampleTraceId, LastSeen) AS sample_trace_id,
    arraySort(groupUniqArray(ServiceName)) AS services
FROM error_patterns
WHERE Tenant = {tenant:String} AND Day >= toDate({since:DateTime}, 'UTC') AND Day <= toDate({until:DateTime} - 1, 'UTC')
GROUP BY tool, is_tool, pattern
ORDER BY count DESC, last_seen DESC, tool, pattern
LIMIT {limit:UInt32}
