-- The time range of one execution's spans, looked up once so that the span and
-- execution reads can prune by partition and primary key (both are time-ordered, not
-- trace-ordered). Start and End are whole seconds (toDateTime of the span start), so
-- every span of the trace starts in [since, until). min/max also cover a trace inserted
-- in several parts whose lookup rows are not merged yet. No row when the lookup table
-- has none for the trace. Unix seconds, bound back as they are: no time zone on the way.
SELECT toUnixTimestamp(min(Start)) AS since, toUnixTimestamp(max(End)) + 1 AS until
FROM otel_traces_trace_id_ts
WHERE TraceId = {trace_id:String} AND Tenant = {tenant:String}
HAVING count() > 0
