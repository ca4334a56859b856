    e.TraceId AS trace_id,
    e.Name AS name,
    e.Type AS type,
    e.Status AS status,
    e.ServiceName AS service,
    toTimeZone(e.StartTime, 'UTC') AS start_time,  -- in UTC whatever the store's time zone (exports print it as is)
    e.DurationNs / 1e6 AS duration_ms
