-- Repairing tool_stats_1d after a deletion (clickhouse/deletion.py), once tool_stats_1m
-- and the hourly tables are repaired. A group is a tool's UTC day, found from the
-- deleted traces' tool calls; tool_stats_1d_mv's own SELECT runs again over the
-- group's hours in tool_stats_1h_by_time.
-- affected
SELECT DISTINCT (ServiceName, ToolName, toStartOfDay(Timestamp, 'UTC'))
FROM tool_calls
WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
-- clear
DELETE FROM tool_stats_1d WHERE Tenant = {tenant:String}
    AND (ServiceName, ToolName, Time) IN {groups:Array(Tuple(String, String, DateTime('UTC')))}
-- source
SELECT * FROM tool_stats_1h_by_time WHERE Tenant = {tenant:String}
    AND (ServiceName, ToolName, toStartOfDay(Time, 'UTC')) IN {groups:Array(Tuple(String, String, DateTime('UTC')))}
