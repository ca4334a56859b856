SELECT FeedbackId AS id, Name AS name, Value AS value, Comment AS comment, UserId AS user_id,
       Source AS source, Timestamp AS time
FROM feedback FINAL
WHERE Tenant = {tenant:String} AND TraceId = {trace_id:String}
ORDER BY Timestamp
