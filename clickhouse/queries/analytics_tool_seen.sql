-- When one tool was first and last called, and how often, over everything stored
-- (reads the tool's Timestamp range of tool_calls: the sort key starts Tenant, ToolName).
SELECT min(Timestamp) AS first_seen, max(Timestamp) AS last_seen, count() AS total_calls
FROM tool_calls
WHERE Tenant = {tenant:String} AND ToolName = {tool:String}
