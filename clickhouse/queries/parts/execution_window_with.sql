-- Per execution of analytics_executions*.sql: whether it finished, and its duration
-- bucket (a sum of comparisons with the four increasing thresholds_ns).
    e.Status != 'running' AS _finished,
    (e.DurationNs >= {thresholds_ns:Array(UInt64)}[1]) + (e.DurationNs >= {thresholds_ns:Array(UInt64)}[2])
        + (e.DurationNs >= {thresholds_ns:Array(UInt64)}[3]) + (e.DurationNs >= {thresholds_ns:Array(UInt64)}[4])
        AS _bucket
