-- The time zones of the processes that opened this store. The embedded engine computes a
-- row's partition (toDate/toYYYYMM of its time) in the zone of the process writing it
-- and prunes a read's partitions by the reading process's dates: where two zones wrote
-- or read, that pruning skips parts holding what is asked for, so it is used only while
-- one zone is recorded (clickhouse/store.py). A store holding spans before this table
-- existed was written in zones no one recorded: it reads without that pruning.
CREATE TABLE IF NOT EXISTS spanhouse_zones
(
    Zone String
)
ENGINE = ReplacingMergeTree
ORDER BY Zone;

INSERT INTO spanhouse_zones SELECT 'unknown: written before migration 0021' FROM otel_traces LIMIT 1;
