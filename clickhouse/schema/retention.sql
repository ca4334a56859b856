-- Applied at every start when SPANHOUSE_RETENTION_DAYS is set ({days} is that whole
-- number): the tables partitioned by day drop whole days older than the retention,
-- the others delete the expired rows (0012: an execution goes from every table at once).
-- A rollup row expires with the last execution it may count: the end of its bucket
-- plus the retention (from its start, a day's row left a day before its executions).
-- error_patterns' Day is a UTC day (0020): a Date's TTL would start it at the server's
-- local midnight, hours before the UTC day's last failure east of UTC.
ALTER TABLE otel_traces MODIFY TTL toDateTime(Timestamp) + toIntervalDay({days});
ALTER TABLE otel_traces_trace_id_ts MODIFY TTL Start + toIntervalDay({days});
ALTER TABLE tool_calls MODIFY TTL toDateTime(Timestamp) + toIntervalDay({days});
ALTER TABLE tool_stats_1m MODIFY TTL Minute + toIntervalMinute(1) + toIntervalDay({days});
ALTER TABLE tool_stats_1h MODIFY TTL Hour + toIntervalHour(1) + toIntervalDay({days});
ALTER TABLE tool_stats_1d MODIFY TTL Time + toIntervalDay(1) + toIntervalDay({days});
ALTER TABLE tool_stats_1h_by_time MODIFY TTL Time + toIntervalHour(1) + toIntervalDay({days});
ALTER TABLE executions MODIFY TTL toDateTime(StartTime) + toIntervalDay({days});
ALTER TABLE error_patterns MODIFY TTL toDateTime(Day, 'UTC') + toIntervalDay(1) + toIntervalDay({days});
ALTER TABLE execution_rollup MODIFY TTL toDateTime(LastSeen) + toIntervalDay({days});
ALTER TABLE execution_tool_calls MODIFY TTL toDateTime(LastCall) + toIntervalDay({days});
ALTER TABLE feedback MODIFY TTL toDateTime(Timestamp) + toIntervalDay({days});
