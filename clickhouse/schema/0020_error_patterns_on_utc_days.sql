-- error_patterns by UTC day, rebuilt whole.
--
-- The view took toDate(Timestamp) in the engine's time zone (the embedded engine takes
-- the process's TZ), while the tool rollups count by UTC hour and day since 0016 and
-- every window the API and the dashboards ask for is in UTC: east of UTC a failure late
-- in a UTC day was filed under the next day, west of it early ones under the day
-- before, so a window's error patterns gained or lost the failures of up to a day at
-- its edges. The view now takes UTC days, and the table is rebuilt from the failed
-- spans still stored (emptied first, so that a rerun after a stop starts over;
-- deduplication off for the refill, as in 0016). Its rows then classify the spans as
-- today's functions do (rows from before 0018 counted an OK span with error.type as a
-- failure). On a ClickHouse server that other writers insert into, run it while they
-- are stopped: a failure inserted between the emptying and the refill counts twice.
ALTER TABLE error_patterns_mv MODIFY QUERY
SELECT
    Tenant,
    toDate(Timestamp, 'UTC') AS Day,
    ServiceName,
    if(spanhouse_is_tool(SpanAttributes), spanhouse_tool_name(SpanAttributes, SpanName), SpanName) AS ToolName,
    spanhouse_is_tool(SpanAttributes) AS IsTool,
    spanhouse_error_pattern(spanhouse_error_type(SpanAttributes, `Events.Name`, `Events.Attributes`),
                            spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS Pattern,
    count() AS Count,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen,
    anyLast(spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS SampleMessage,
    anyLast(TraceId) AS SampleTraceId
FROM otel_traces
WHERE spanhouse_is_error(StatusCode, SpanAttributes)
GROUP BY Tenant, Day, ServiceName, ToolName, IsTool, Pattern;

TRUNCATE TABLE IF EXISTS error_patterns;

INSERT INTO error_patterns
SETTINGS insert_deduplicate = 0
SELECT
    Tenant,
    toDate(Timestamp, 'UTC') AS Day,
    ServiceName,
    if(spanhouse_is_tool(SpanAttributes), spanhouse_tool_name(SpanAttributes, SpanName), SpanName) AS ToolName,
    spanhouse_is_tool(SpanAttributes) AS IsTool,
    spanhouse_error_pattern(spanhouse_error_type(SpanAttributes, `Events.Name`, `Events.Attributes`),
                            spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS Pattern,
    count() AS Count,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen,
    anyLast(spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS SampleMessage,
    anyLast(TraceId) AS SampleTraceId
FROM otel_traces
WHERE spanhouse_is_error(StatusCode, SpanAttributes)
GROUP BY Tenant, Day, ServiceName, ToolName, IsTool, Pattern;
