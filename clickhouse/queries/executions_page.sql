-- One page of executions, newest first (latest state of each: FINAL replaces a
-- running marker by the finished root span).
SELECT
{{include:execution_columns}},
{{include:execution_text_columns}}
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String} {{filters}}
ORDER BY e.StartTime DESC, e.TraceId DESC
LIMIT {limit:UInt32}
