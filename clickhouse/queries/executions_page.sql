-- One page of executions, newest first (latest state of each: FINAL replaces a
-- running marker by the finished root span).
SELECT
{{include:execution_columns}},
{{include:execution_text_columns}},
    toUnixTimestamp64Nano(e.StartTime) AS start_ns  -- for the cursor: the driver's datetimes stop at microseconds
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String} {{filters}}
ORDER BY e.StartTime DESC, e.TraceId DESC
LIMIT {limit:UInt32}
