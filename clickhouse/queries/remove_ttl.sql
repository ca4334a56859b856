-- Retention unset after it was set: the table keeps everything again (clickhouse/migrations.py).
ALTER TABLE {table:Identifier} REMOVE TTL
