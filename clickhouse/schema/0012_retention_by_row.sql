-- Retention by row in the monthly-partitioned tables. With ttl_only_drop_parts a TTL
-- drops a part only once every row in it has expired: executions, the tool stats and
-- the error patterns (partitioned by month) kept an expired execution listed, and its
-- tool calls counted, for up to a month after its spans (daily parts of otel_traces and
-- tool_calls) and its rollup and feedback rows (deleted by row) were gone: listed with
-- no spans, no tool calls, no tokens. These tables now delete expired rows in TTL merges,
-- at the time the rest of the execution goes. The daily-partitioned tables keep dropping
-- whole parts (cheaper, and at most a day late).
ALTER TABLE executions MODIFY SETTING ttl_only_drop_parts = 0;
ALTER TABLE tool_stats_1m MODIFY SETTING ttl_only_drop_parts = 0;
ALTER TABLE tool_stats_1h MODIFY SETTING ttl_only_drop_parts = 0;
ALTER TABLE tool_stats_1h_by_time MODIFY SETTING ttl_only_drop_parts = 0;
ALTER TABLE tool_stats_1d MODIFY SETTING ttl_only_drop_parts = 0;
ALTER TABLE error_patterns MODIFY SETTING ttl_only_drop_parts = 0;
