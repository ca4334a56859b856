-- The executions matching the filters (for bulk deletion).
SELECT DISTINCT e.TraceId AS trace_id
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String} {{filters}}
