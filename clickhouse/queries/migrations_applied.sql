SELECT version, name, checksum FROM spanhouse_migrations FINAL ORDER BY version
