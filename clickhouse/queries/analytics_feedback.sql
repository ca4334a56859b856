-- Feedback on the executions started in the window, per feedback name: how many, how
-- many with a value, and the average, min and max of those (feedback without a value,
-- a comment alone, is NULL: skipped). Feedback is the small side: its trace ids bound
-- the executions probed. Values near the float maximum (any finite one is taken)
-- overflow avg's sum to infinity: the mean is then taken of the values scaled down
-- (by a materialized constant: the engine moves a literal one out of the aggregate).
SELECT
    Name AS name,
    count() AS count,
    count(Value) AS with_value,
    if(isFinite(avg(Value)), avg(Value), avg(Value / materialize(1e300)) * 1e300) AS average,
    min(Value) AS min,
    max(Value) AS max
FROM feedback FINAL
WHERE Tenant = {tenant:String}
  AND TraceId IN (SELECT e.TraceId FROM executions AS e FINAL
                  WHERE e.Tenant = {tenant:String}
                    AND e.StartTime >= toDateTime64({since:DateTime}, 9) AND e.StartTime < toDateTime64({until:DateTime}, 9)
                    AND e.TraceId IN (SELECT TraceId FROM feedback WHERE Tenant = {tenant:String}) {{filters}})
GROUP BY name
ORDER BY name
