    e.TraceId AS trace_id,
    e.Name AS name,
    e.Type AS type,
    e.Status AS status,
    e.ServiceName AS service,
    e.StartTime AS start_time,
    e.DurationNs / 1e6 AS duration_ms
