-- execution_tool_calls: per execution and tool, how many calls. Why: the "tool called
-- repeatedly in one execution" tip counts the calls of a sample of executions, and it
-- looked them up in tool_calls, which is ordered by (tool, time): a lookup by trace id
-- read most of the window's granules (55-64 ms of the ~190 ms performance call at 10M
-- spans). Here they are ordered by trace, in granules of 1024 rows, so 50 executions
-- are 50 small reads. A sum, like every rollup: the same however a trace's tool calls
-- are split across inserts; readers sum. Fed by tool_calls (each tool call once there).
CREATE TABLE IF NOT EXISTS execution_tool_calls
(
    Tenant LowCardinality(String),
    TraceId String CODEC(ZSTD(1)),
    ToolName LowCardinality(String),
    Calls SimpleAggregateFunction(sum, UInt64),
    LastCall SimpleAggregateFunction(max, DateTime64(9)) CODEC(ZSTD(1))
)
ENGINE = AggregatingMergeTree
ORDER BY (Tenant, TraceId, ToolName)
SETTINGS index_granularity = 1024, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS execution_tool_calls_mv TO execution_tool_calls AS
SELECT Tenant, TraceId, ToolName, count() AS Calls, max(Timestamp) AS LastCall
FROM tool_calls
GROUP BY Tenant, TraceId, ToolName;

-- The tool calls stored before this migration (the view sees only later inserts), for
-- the executions not in the table yet: running the file again (it is recorded only
-- once all of it ran) adds nothing twice, though after a run that failed partway an
-- execution it reached keeps what it got. A writer inserting while this runs could
-- have an execution's later calls here already and its earlier ones left out; the
-- collector migrates before it listens. GLOBAL: on a cluster both sides are Distributed
-- tables. Spills to disk past 1 GB of groups.
INSERT INTO execution_tool_calls
SELECT Tenant, TraceId, ToolName, count() AS Calls, max(Timestamp) AS LastCall
FROM tool_calls
WHERE (Tenant, TraceId) GLOBAL NOT IN (SELECT Tenant, TraceId FROM execution_tool_calls)
GROUP BY Tenant, TraceId, ToolName
SETTINGS max_bytes_before_external_group_by = 1000000000
