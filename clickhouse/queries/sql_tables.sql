-- The tables a SQL endpoint query may name (collector/sql_guard.py): those the engine
-- lists, as `database.name` and, in the current database, as `name`. The embedded
-- engine's default database also resolves any other name as a file of the host
-- (chdb's Overlay with a Filesystem database), which no listed table is.
SELECT concat(database, '.', name) AS name FROM system.tables WHERE engine != 'File'
UNION ALL
SELECT name FROM system.tables WHERE database = currentDatabase() AND engine != 'File'
