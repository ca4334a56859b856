-- Which numbered schema files have been applied, and their checksums: the runner
-- refuses to start when an applied file was edited afterwards.
CREATE TABLE IF NOT EXISTS spanhouse_migrations
(
    version UInt32,
    name String,
    checksum String,
    applied_at DateTime64(3) DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version;
