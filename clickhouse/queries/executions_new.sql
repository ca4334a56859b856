-- Executions stored (or updated: running -> finished) after a point in the feed, oldest
-- first: the feed of the server-sent events stream. The point is (stored at, trace id):
-- one insert stores many executions at the same InsertedAt, and a page of 500 may end
-- among them.
SELECT
{{include:execution_columns}},
    e.InsertedAt AS stored_at
FROM executions AS e
WHERE e.Tenant = {tenant:String} AND (e.InsertedAt, e.TraceId) > ({after:DateTime64(3)}, {after_id:String})
ORDER BY e.InsertedAt, e.TraceId
LIMIT 500
