    e.UserId AS user_id,
    e.SessionId AS session_id,
    e.StatusMessage AS error_message,
    e.ErrorType AS error_type,
    e.Input AS input,
    e.Output AS output
