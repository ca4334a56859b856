-- The spans the store holds (of any tenant): a store without one has stored no spool
-- segment either, and a count that changed says something stored spans meanwhile
-- (clickhouse/migrations.py, behind_with_spans; collector/exporter.py's replay mark).
SELECT count() AS spans FROM otel_traces
