-- Migration 0011 filled tool_stats_1h_by_time (and, through its view, tool_stats_1d)
-- from tool_stats_1h for the keys the table did not have yet. A run of it stopped
-- partway (the collector killed during a ~10 s backfill of a 4M-call store) left both
-- short for good: the rerun skipped every key the first run had reached, including one
-- reached by half its rows, and tool_stats_1d lacked any block the stop fell between
-- its two inserts. Both are rebuilt whole here from tool_stats_1h, which the tool_calls
-- views have kept since the start. Emptying them first makes a rerun after another stop
-- start over rather than add twice. Deduplication is off for the refill: a block equal
-- to one inserted before the emptying must be written again, not dropped as a repeat
-- (the embedded engine forgets a table's block hashes when it is emptied; a replicated
-- table's, kept in Keeper, may not be).
-- Hours that retention has already removed from tool_stats_1h are missing from the
-- oldest day after the rebuild: it then counts the executions still stored.
TRUNCATE TABLE IF EXISTS tool_stats_1h_by_time;
TRUNCATE TABLE IF EXISTS tool_stats_1d;
INSERT INTO tool_stats_1h_by_time
SETTINGS insert_deduplicate = 0, deduplicate_blocks_in_dependent_materialized_views = 0
SELECT Tenant, Hour AS Time, ServiceName, ToolName, Calls, Errors, DurationSumNs, DurationMaxNs, DurationQuantiles
FROM tool_stats_1h
