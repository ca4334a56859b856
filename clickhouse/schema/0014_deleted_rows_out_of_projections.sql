-- Rows deleted before this migration out of the projections.
-- Why: after a lightweight DELETE the engine (26.9) keeps the deleted rows in a part's
-- projections until the part is merged, although these tables ask it to rebuild them
-- (lightweight_mutation_projection_mode = 'rebuild', 0008 and 0013; 'drop' is worse:
-- parts without the projection can no longer be merged with parts that have it). So a
-- deleted execution's spans stayed readable by trace id (0013's by_trace), and the tool
-- rollups' by_time projections (0008) served the deleted rows of recomputed groups next
-- to their new ones: tool numbers read by time window counted them twice. Deletion now
-- applies the mask after it deletes (clickhouse/deletion.py); this rewrites the parts
-- that still carry an older mask (a mutation, in the background).
ALTER TABLE otel_traces APPLY DELETED MASK;
ALTER TABLE tool_stats_1m APPLY DELETED MASK;
ALTER TABLE tool_stats_1h APPLY DELETED MASK;
