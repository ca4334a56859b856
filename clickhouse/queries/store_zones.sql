-- The time zones recorded as having opened the store (0021_zones_that_wrote_the_store.sql).
SELECT DISTINCT Zone AS zone FROM spanhouse_zones ORDER BY zone
