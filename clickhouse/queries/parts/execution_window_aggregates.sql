-- What analytics_executions*.sql count over a set of executions (see there).
    count() AS executions,
    countIf(_finished) AS finished,
    sumIf(e.DurationNs, _finished) AS duration_sum_ns,
    min(e.StartTime) AS first_start,
    max(e.StartTime) AS last_start,
    quantilesExactInclusiveIf(0.5, 0.95)(e.DurationNs, _finished) AS quantiles_ns,
    [countIf(_finished AND _bucket = 0), countIf(_finished AND _bucket = 1), countIf(_finished AND _bucket = 2),
     countIf(_finished AND _bucket = 3), countIf(_finished AND _bucket = 4)] AS buckets
