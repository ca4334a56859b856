-- The last execution of an export page: the one `offset` places (from 0) below the
-- cursor, newest first. No row when fewer remain: the page is the last.
SELECT toUnixTimestamp64Nano(e.StartTime) AS start_ns, e.TraceId AS trace_id
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String} {{filters}}
ORDER BY e.StartTime DESC, e.TraceId DESC
LIMIT 1 OFFSET {offset:UInt32}
