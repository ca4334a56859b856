-- Which span names used the tokens of the given executions. otel_traces is read for
-- those traces only: the seconds their spans cover (`seconds`, when given) or the range
-- [start_s, end_s] narrow the primary key (toDateTime(Timestamp)) and the partitions,
-- and the bloom-filter index on TraceId skips the rest. An agent or workflow span's
-- usage counts only in a trace whose model calls carry none: elsewhere it is the total
-- of the calls under it, counted there. That is read off the trace's own spans (not the
-- rollup, whose rows from before migration 0018 hold agent usage as the calls').
SELECT
    SpanName AS span_name,
    countIf(used) AS spans,
    uniqExactIf(TraceId, used) AS executions,
    sumIf(input, counted) AS input_tokens,
    sumIf(output, counted) AS output_tokens
FROM
(
    SELECT SpanName, TraceId, spanhouse_input_tokens(SpanAttributes) AS input,
           spanhouse_output_tokens(SpanAttributes) AS output, spanhouse_is_aggregate(SpanAttributes) AS aggregate,
           NOT aggregate OR countIf(NOT aggregate AND (input > 0 OR output > 0)) OVER (PARTITION BY TraceId) = 0
               AS counted,
           counted AND (input > 0 OR output > 0) AS used  -- spans and executions say where the tokens went
    FROM otel_traces
    WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
      AND toDateTime(Timestamp) >= toDateTime({start_s:UInt32}) AND toDateTime(Timestamp) <= toDateTime({end_s:UInt32})
      AND (empty({seconds:Array(DateTime)}) OR toDateTime(Timestamp) IN {seconds:Array(DateTime)})
)
GROUP BY span_name
HAVING input_tokens + output_tokens > 0
ORDER BY input_tokens + output_tokens DESC, span_name
LIMIT {limit:UInt32}
