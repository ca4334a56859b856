-- Tool rollups by UTC hour, rebuilt whole.
--
-- tool_stats_1h grouped minutes with toStartOfHour in the engine's time zone (the
-- embedded engine takes the process's TZ). In a zone whose offset is not whole hours
-- (Asia/Kolkata, +05:30) its hours started at :30 UTC while every window the API, the
-- tips, the anomalies and the dashboards ask for is cut at whole UTC hours: the window's
-- first half hour of calls fell before it, the half hour before it was counted in it,
-- and the hours were labelled half an hour early. The view now takes UTC hours.
--
-- The hourly, time-ordered and daily rollups are then rebuilt from tool_stats_1m (by
-- minute, the same in any zone), which the tool_calls view has kept since the start.
-- That also repairs a run of migration 0011 stopped partway, which left
-- tool_stats_1h_by_time and tool_stats_1d short for good (its rerun skipped every key
-- the first run had reached). Emptying them first makes a rerun after a stop of this
-- file start over rather than add twice. Deduplication is off for the refill: a block
-- equal to one inserted before the emptying must be written again, not dropped as a
-- repeat (the embedded engine forgets a table's block hashes when it is emptied; a
-- replicated table's, kept in Keeper, may not be). Minutes that retention has already
-- removed from tool_stats_1m are missing from the oldest hours and day afterwards: they
-- then count the executions still stored.
ALTER TABLE tool_stats_1h_mv MODIFY QUERY
SELECT
    Tenant,
    ServiceName,
    ToolName,
    toStartOfHour(Minute, 'UTC') AS Hour,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    sum(DurationSumNs) AS DurationSumNs,
    max(DurationMaxNs) AS DurationMaxNs,
    quantilesDDMergeState(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS DurationQuantiles,
    sumForEachMergeState(LatencyBuckets) AS LatencyBuckets
FROM tool_stats_1m
GROUP BY Tenant, ServiceName, ToolName, Hour;

TRUNCATE TABLE IF EXISTS tool_stats_1h;
TRUNCATE TABLE IF EXISTS tool_stats_1h_by_time;
TRUNCATE TABLE IF EXISTS tool_stats_1d;

-- The view's own query over every stored minute; the views of tool_stats_1h fill
-- tool_stats_1h_by_time and tool_stats_1d from what it inserts.
INSERT INTO tool_stats_1h
SETTINGS insert_deduplicate = 0, deduplicate_blocks_in_dependent_materialized_views = 0
SELECT
    Tenant,
    ServiceName,
    ToolName,
    toStartOfHour(Minute, 'UTC') AS Hour,
    sum(Calls) AS Calls,
    sum(Errors) AS Errors,
    sum(DurationSumNs) AS DurationSumNs,
    max(DurationMaxNs) AS DurationMaxNs,
    quantilesDDMergeState(0.01, 0.5, 0.9, 0.95, 0.99)(DurationQuantiles) AS DurationQuantiles,
    sumForEachMergeState(LatencyBuckets) AS LatencyBuckets
FROM tool_stats_1m
GROUP BY Tenant, ServiceName, ToolName, Hour
