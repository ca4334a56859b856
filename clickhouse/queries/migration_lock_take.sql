-- The migration lock. Creating a table is atomic on a server: of two migrators running at
-- once (collectors started together against one ClickHouse), one creates it and migrates,
-- the other gets TABLE_ALREADY_EXISTS and waits, then finds the files applied. Without
-- it both ran the same file, and the backfills of 0010/0011 counted every tool call
-- twice. On a cluster the lock is the node's own: run `spanhouse migrate --cluster` once.
CREATE TABLE spanhouse_migration_lock (Taken DateTime DEFAULT now()) ENGINE = Memory
