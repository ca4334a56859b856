-- Feedback without a value. Any OTLP client can send feedback as a spanhouse.feedback
-- span, and a comment alone (or a value that is not a finite number) was stored by
-- feedback_mv as 0 (toFloat64OrZero): a 0 rating that pulled every average down.
-- Value becomes Nullable: such feedback keeps its comment and has no value, which avg,
-- min and max skip. Rows stored before this migration keep their 0 (a missing value
-- cannot be told from a real 0 any more). The API always stores a value.
ALTER TABLE feedback MODIFY COLUMN Value Nullable(Float64);

-- 0006's view, the value taken only when it is a finite number (an atomic swap of the
-- query: no insert is missed).
ALTER TABLE feedback_mv MODIFY QUERY
SELECT
    Tenant,
    multiIf(SpanAttributes['spanhouse.feedback.execution_id'] != '', lower(SpanAttributes['spanhouse.feedback.execution_id']),
            notEmpty(`Links.TraceId`), `Links.TraceId`[1],
            TraceId) AS TraceId,
    SpanId AS FeedbackId,
    Timestamp,
    if(SpanAttributes['spanhouse.feedback.name'] != '', SpanAttributes['spanhouse.feedback.name'], 'user_rating') AS Name,
    if(isFinite(toFloat64OrNull(SpanAttributes['spanhouse.feedback.value'])),
       toFloat64OrNull(SpanAttributes['spanhouse.feedback.value']), NULL) AS Value,
    SpanAttributes['spanhouse.feedback.comment'] AS Comment,
    if(SpanAttributes['user.id'] != '', SpanAttributes['user.id'], SpanAttributes['enduser.id']) AS UserId,
    'otlp' AS Source
FROM otel_traces
WHERE SpanName = 'spanhouse.feedback'
