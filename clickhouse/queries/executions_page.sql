-- One page of executions, newest first (latest state of each: FINAL replaces a
-- running marker by the finished root span).
SELECT
    e.TraceId AS trace_id,
    e.Name AS name,
    e.Type AS type,
    e.Status AS status,
    e.ServiceName AS service,
    e.StartTime AS start_time,
    e.DurationNs / 1e6 AS duration_ms,
    e.UserId AS user_id,
    e.SessionId AS session_id,
    e.StatusMessage AS error_message,
    e.ErrorType AS error_type,
    e.Input AS input,
    e.Output AS output
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String} {{filters}}
ORDER BY e.StartTime DESC, e.TraceId DESC
LIMIT {limit:UInt32}
