-- Executions started in the window (latest state of each: FINAL), in one pass: one row
-- per type and status, and a total row (is_total = 1). Per row: count, summed duration
-- and first/last start; over the finished ones (status != 'running'), exact duration
-- percentiles (quantilesExactInclusive: linear interpolation between closest ranks, as
-- numpy's default) and a count per duration bucket: bucket i (0-based) counts durations
-- d with thresholds_ns[i] <= d < thresholds_ns[i + 1] (bucket 0: below the first
-- threshold; the last: at or above the last one).
SELECT
    e.Type AS type,
    e.Status AS status,
    grouping(type, status) = 3 AS is_total,
    count() AS executions,
    countIf(e.Status != 'running') AS finished,
    sumIf(e.DurationNs, e.Status != 'running') AS duration_sum_ns,
    min(e.StartTime) AS first_start,
    max(e.StartTime) AS last_start,
    quantilesExactInclusiveIf(0.5, 0.95)(e.DurationNs, e.Status != 'running') AS quantiles_ns,
    sumForEachIf(arrayMap(i -> toUInt64(arrayCount(t -> e.DurationNs >= t, {thresholds_ns:Array(UInt64)}) = i),
                          range(length({thresholds_ns:Array(UInt64)}) + 1)),
                 e.Status != 'running') AS buckets
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String}
  AND e.StartTime >= {since:DateTime} AND e.StartTime < {until:DateTime} {{filters}}
GROUP BY GROUPING SETS ((type, status), ())
ORDER BY is_total, type, status
