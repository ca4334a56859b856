-- Tables carrying a projection (otel_traces' by_trace, the tool rollups' by_time): after
-- a lightweight DELETE the engine keeps the deleted rows in their projections (it does
-- not rebuild them, whatever lightweight_mutation_projection_mode says) until the part
-- is merged, so deletion applies the mask to them (clickhouse/deletion.py).
SELECT DISTINCT table
FROM system.projections
WHERE database = currentDatabase()
ORDER BY table
