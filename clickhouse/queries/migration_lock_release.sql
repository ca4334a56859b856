-- Releases the migration lock (migration_lock_take.sql).
DROP TABLE IF EXISTS spanhouse_migration_lock
