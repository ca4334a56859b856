-- A replayed batch is recognised by its deduplication token, one entry per block, and a
-- block per partition the batch touches. A batch whose spans fall on more than 1000 days
-- (a backfill; a client with a broken clock) pushed its own first entries out of the
-- window of 1000, so its replay after a crash stored every row again. 10000 entries
-- hold a batch over 27 years of days (the monthly tables: every month the engine can
-- store); an entry is a block id, so the window costs about 1 MB of memory per table.
ALTER TABLE otel_traces MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE otel_traces_trace_id_ts MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE tool_calls MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE executions MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE error_patterns MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE tool_stats_1m MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE tool_stats_1h MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE tool_stats_1h_by_time MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE tool_stats_1d MODIFY SETTING non_replicated_deduplication_window = 10000;
