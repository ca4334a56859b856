-- Optional filters of the execution queries (alias e = executions). Each block is one
-- condition; the caller turns on the ones the user asked for (queries.render).
-- status
e.Status = {status:String}
-- service
e.ServiceName = {service:String}
-- name
e.Name = {name:String}
-- type
e.Type = {type:String}
-- user
e.UserId = {user:String}
-- session
e.SessionId = {session:String}
-- since
e.StartTime >= {since:DateTime64(9)}
-- until
e.StartTime < {until:DateTime64(9)}
-- min_duration
-- in listed units (duration_ms): a listed duration given back as a bound matches itself;
-- a running execution has no duration yet (its 0 would pass every max_duration)
e.Status != 'running' AND e.DurationNs / 1e6 >= {min_duration_ms:Float64}
-- max_duration
e.Status != 'running' AND e.DurationNs / 1e6 <= {max_duration_ms:Float64}
-- q
positionCaseInsensitiveUTF8(e.Input, {q:String}) > 0
    OR positionCaseInsensitiveUTF8(e.Output, {q:String}) > 0
    OR positionCaseInsensitiveUTF8(e.StatusMessage, {q:String}) > 0
    OR e.TraceId IN (SELECT TraceId FROM tool_calls
                     WHERE Tenant = {tenant:String} AND positionCaseInsensitiveUTF8(ErrorMessage, {q:String}) > 0)
-- min_cost
({min_cost:Float64} <= 0  -- an execution with no rollup row yet (only its start marker) costs 0
 OR e.TraceId IN (SELECT TraceId FROM execution_rollup WHERE Tenant = {tenant:String}
                  GROUP BY TraceId
                  HAVING round({{include:trace_usage}}.3, 8) >= {min_cost:Float64}))
-- tool
e.TraceId IN (SELECT TraceId FROM tool_calls WHERE Tenant = {tenant:String} AND ToolName = {tool:String})
-- has_errors
(e.Status = 'error' OR e.TraceId IN (SELECT TraceId FROM execution_rollup WHERE Tenant = {tenant:String}
                                     GROUP BY TraceId HAVING sum(ErrorSpans) > 0)) = {has_errors:Bool}
-- trace_ids
e.TraceId IN {trace_ids:Array(String)}
-- cursor
-- the tuple alone would not narrow the key range: the StartTime bound does
e.StartTime <= fromUnixTimestamp64Nano({cursor_ns:Int64})
    AND (e.StartTime, e.TraceId) < (fromUnixTimestamp64Nano({cursor_ns:Int64}), {cursor_id:String})
-- through
-- down to an export page's last execution, itself included (the next page's cursor)
e.StartTime >= fromUnixTimestamp64Nano({through_ns:Int64})
    AND (e.StartTime, e.TraceId) >= (fromUnixTimestamp64Nano({through_ns:Int64}), {through_id:String})
