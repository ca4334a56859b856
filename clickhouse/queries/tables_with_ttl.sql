-- Which of the given tables carry a table TTL (an earlier retention setting).
SELECT name
FROM system.tables
WHERE database = currentDatabase() AND name IN {tables:Array(String)} AND engine_full LIKE '% TTL %'
ORDER BY name
