-- Does this tenant have this execution (as an execution or at least one span)?
SELECT count() > 0 AS known
FROM otel_traces_trace_id_ts
WHERE TraceId = {trace_id:String} AND Tenant = {tenant:String}
