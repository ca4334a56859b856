-- Executions stored (or updated: running -> finished) after a point in the feed and
-- stamped before the watermark `until`, oldest first: the feed of the server-sent events
-- stream. The point is (stored at, trace id): one insert stores many executions at the
-- same InsertedAt, and a page of 500 may end among them. `until` is read between two
-- inserts (collector/api.py), so every row stamped before it is visible.
SELECT
{{include:execution_columns}},
    e.InsertedAt AS stored_at
FROM executions AS e
WHERE e.Tenant = {tenant:String} AND (e.InsertedAt, e.TraceId) > ({after:DateTime64(3)}, {after_id:String})
  AND e.InsertedAt < {until:DateTime64(3)}
ORDER BY e.InsertedAt, e.TraceId
LIMIT 500
