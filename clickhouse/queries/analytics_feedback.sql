-- Feedback on the executions started in the window, per feedback name: how many, how
-- many with a value, and the average, min and max of those (feedback without a value,
-- a comment alone, is NULL: skipped). Feedback is the small side: its trace ids bound
-- the executions probed.
SELECT
    Name AS name,
    count() AS count,
    count(Value) AS with_value,
    avg(Value) AS average,
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
