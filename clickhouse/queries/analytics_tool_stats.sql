-- Per tool over the window [since, until) and the window of the same length before it
-- [prev_since, since): calls, errors, durations and DDSketch percentiles (merged states;
-- 1% relative accuracy). The whole UTC days of each window, [days_since, days_until)
-- and [prev_days_since, prev_days_until) (empty ranges when a window holds none), are
-- read from the daily rollup, the hours around them from the hourly one ordered by
-- time (0011_tool_leaderboard_rollups.sql says why). Tools without a call in the
-- window, or with fewer than min_calls, are left out.
WITH Time >= {since:DateTime} AS _current
SELECT
    ToolName AS tool,
    sumIf(Calls, _current) AS calls,
    sumIf(Errors, _current) AS errors,
    sumIf(DurationSumNs, _current) AS duration_sum_ns,
    maxIf(DurationMaxNs, _current) AS duration_max_ns,
    quantilesDDMergeIf(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles, _current) AS quantiles_ns,
    sumIf(Calls, NOT _current) AS prev_calls,
    sumIf(Errors, NOT _current) AS prev_errors,
    quantilesDDMergeIf(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles, NOT _current) AS prev_quantiles_ns,
    arraySort(groupUniqArrayIf(ServiceName, _current)) AS services
FROM
(
    SELECT ServiceName, ToolName, Time, Calls, Errors, DurationSumNs, DurationMaxNs, DurationQuantiles
    FROM tool_stats_1h_by_time
    WHERE Tenant = {tenant:String}
      AND ((Time >= {prev_since:DateTime} AND Time < {prev_days_since:DateTime})
           OR (Time >= {prev_days_until:DateTime} AND Time < {days_since:DateTime})
           OR (Time >= {days_until:DateTime} AND Time < {until:DateTime})) {{filters}}
    UNION ALL
    SELECT ServiceName, ToolName, Time, Calls, Errors, DurationSumNs, DurationMaxNs, DurationQuantiles
    FROM tool_stats_1d
    WHERE Tenant = {tenant:String}
      AND ((Time >= {days_since:DateTime} AND Time < {days_until:DateTime})
           OR (Time >= {prev_days_since:DateTime} AND Time < {prev_days_until:DateTime})) {{filters}}
)
GROUP BY tool
HAVING calls > 0 AND calls >= {min_calls:UInt64}
