-- Which span names used the tokens of the given executions. otel_traces is read for
-- those traces only: the seconds their spans cover (`seconds`, when given) or the range
-- [start_s, end_s] narrow the primary key (toDateTime(Timestamp)) and the partitions,
-- and the bloom-filter index on TraceId skips the rest. An agent span's usage counts
-- only in the executions whose tokens are their agent spans' (`agent_trace_ids`): in
-- the others it is the total of the model calls under it, counted there.
WITH NOT spanhouse_is_aggregate(SpanAttributes) OR has({agent_trace_ids:Array(String)}, TraceId) AS counted
SELECT
    SpanName AS span_name,
    count() AS spans,
    uniqExact(TraceId) AS executions,
    sumIf(spanhouse_input_tokens(SpanAttributes), counted) AS input_tokens,
    sumIf(spanhouse_output_tokens(SpanAttributes), counted) AS output_tokens
FROM otel_traces
WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
  AND toDateTime(Timestamp) >= toDateTime({start_s:UInt32}) AND toDateTime(Timestamp) <= toDateTime({end_s:UInt32})
  AND (empty({seconds:Array(DateTime)}) OR toDateTime(Timestamp) IN {seconds:Array(DateTime)})
GROUP BY span_name
HAVING input_tokens + output_tokens > 0
ORDER BY input_tokens + output_tokens DESC, span_name
LIMIT {limit:UInt32}
