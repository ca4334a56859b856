-- the execution a feedback span rates, as feedback_mv (0009) reads it into feedback.TraceId
multiIf(SpanAttributes['spanhouse.feedback.execution_id'] != '', lower(SpanAttributes['spanhouse.feedback.execution_id']),
        notEmpty(`Links.TraceId`), `Links.TraceId`[1],
        TraceId)
