-- Whether the store holds any span (of any tenant): a store without one has stored no
-- spool segment either (clickhouse/migrations.py, behind_with_spans).
SELECT count() > 0 AS has_spans FROM (SELECT 1 FROM otel_traces LIMIT 1)
