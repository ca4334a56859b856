-- Feedback items, oldest first: an execution's (filter `execution`, its detail) or the
-- items of one id (filter `id`: GET /api/v1/feedback/{id}; an id the API gave or the
-- client chose, or the span id of feedback sent over OTLP).
SELECT FeedbackId AS id, TraceId AS execution_id, Name AS name, Value AS value, Comment AS comment,
       UserId AS user_id, Source AS source, Timestamp AS time
FROM feedback FINAL
WHERE Tenant = {tenant:String} {{filters}}
ORDER BY Timestamp
