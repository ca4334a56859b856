-- Optional filters of queries/feedback.sql, picked by the caller (queries.render).
-- execution
TraceId = {trace_id:String}
-- id
FeedbackId = {feedback_id:String}
