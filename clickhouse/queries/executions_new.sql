-- Executions stored (or updated: running -> finished) after a point in time, oldest
-- first: the feed of the server-sent events stream.
SELECT
{{include:execution_columns}},
    e.InsertedAt AS stored_at
FROM executions AS e
WHERE e.Tenant = {tenant:String} AND e.InsertedAt > {after:DateTime64(3)}
ORDER BY e.InsertedAt, e.TraceId
LIMIT 500
