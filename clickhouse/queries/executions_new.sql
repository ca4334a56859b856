-- Executions stored (or updated: running -> finished) after a point in time, oldest
-- first: the feed of the server-sent events stream.
SELECT
    e.TraceId AS trace_id,
    e.Name AS name,
    e.Type AS type,
    e.Status AS status,
    e.ServiceName AS service,
    e.StartTime AS start_time,
    e.DurationNs / 1e6 AS duration_ms,
    e.InsertedAt AS stored_at
FROM executions AS e
WHERE e.Tenant = {tenant:String} AND e.InsertedAt > {after:DateTime64(3)}
ORDER BY e.InsertedAt, e.TraceId
LIMIT 500
