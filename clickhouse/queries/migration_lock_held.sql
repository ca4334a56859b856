-- Since when the migration lock (migration_lock_take.sql) has been held; no row if free.
SELECT metadata_modification_time AS since
FROM system.tables
WHERE database = currentDatabase() AND name = 'spanhouse_migration_lock'
