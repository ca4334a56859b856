-- Repairing tool_stats_1m after a deletion (clickhouse/deletion.py). A group is a tool's
-- UTC hour: its minutes are cleared here and in the hourly tables its views feed, then
-- tool_stats_1m_mv's own SELECT runs again over the group's surviving tool calls.
-- affected
SELECT DISTINCT (ServiceName, ToolName, toStartOfHour(Timestamp, 'UTC'))
FROM tool_calls
WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
-- clear
DELETE FROM tool_stats_1m WHERE Tenant = {tenant:String}
    AND (ServiceName, ToolName, toStartOfHour(Minute, 'UTC')) IN {groups:Array(Tuple(String, String, DateTime('UTC')))};
DELETE FROM tool_stats_1h WHERE Tenant = {tenant:String}
    AND (ServiceName, ToolName, Hour) IN {groups:Array(Tuple(String, String, DateTime('UTC')))};
DELETE FROM tool_stats_1h_by_time WHERE Tenant = {tenant:String}
    AND (ServiceName, ToolName, Time) IN {groups:Array(Tuple(String, String, DateTime('UTC')))}
-- source
SELECT * FROM tool_calls WHERE Tenant = {tenant:String}
    AND (ServiceName, ToolName, toStartOfHour(Timestamp, 'UTC')) IN {groups:Array(Tuple(String, String, DateTime('UTC')))}
