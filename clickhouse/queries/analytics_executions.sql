-- Executions started in the window (latest state of each: FINAL), in one pass: one row
-- per type and status, and a total row (is_total = 1). Per row: count, summed duration
-- and first/last start; over the finished ones (status != 'running'), exact duration
-- percentiles (quantilesExactInclusive: linear interpolation between closest ranks, as
-- numpy's default) and a count per duration bucket: with the four increasing
-- thresholds_ns t1..t4, bucket 0 counts durations below t1, bucket i those with
-- t_i <= d < t_(i+1), bucket 4 those at or above t4. The bucket index is a sum of
-- comparisons (countIf per bucket): a third cheaper than array functions per row.
WITH
{{include:execution_window_with}}
SELECT
    e.Type AS type,
    e.Status AS status,
    grouping(type, status) = 3 AS is_total,
{{include:execution_window_aggregates}}
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String}
  AND e.StartTime >= toDateTime64({since:DateTime}, 9) AND e.StartTime < toDateTime64({until:DateTime}, 9) {{filters}}
GROUP BY GROUPING SETS ((type, status), ())
ORDER BY is_total, type, status
