-- Reading spans as the conventions say (found by a review against what instrumentations
-- send), and costs that are numbers.
--
-- * Status OK is final: the OTel trace API says analysis tools SHOULD suppress the errors
--   they would otherwise see on a span set to OK (its example: a 404 the application
--   handled), but error.type on such a span still counted as a failure.
-- * A span that did not fail has no error type or message: the first exception event of
--   a span that handled it (status unset) gave a successful execution or tool call an
--   error message, which the list showed and `q` matched.
-- * Token counts under the names OpenLLMetry and the GenAI conventions up to 1.26 use
--   (gen_ai.usage.prompt_tokens, gen_ai.usage.completion_tokens) were read as 0.
-- * An execute_tool span without gen_ai.tool.name, named `execute_tool {tool}` as the
--   conventions name it, was filed under its whole span name: one tool's calls in two.
-- * Usage on an agent or workflow span was added to its model calls' usage, but the GenAI
--   conventions allow usage on invoke_agent as the total of the calls under it (so
--   pydantic-ai records it): an execution's tokens and cost came out twice. The rollup
--   now keeps the usage of such spans apart (Agent* columns), and an execution's figure
--   is its model calls' when they carry any, else its agents' (an SDK user's
--   record_usage inside an agent): spanhouse_trace_usage. Rows stored before hold all
--   usage in the model columns, so they read as they did.
-- * A cost that said 'NaN' or 'inf' (any OTLP client can send that) put NaN or infinity
--   into its execution's rollup, whose sums keep it for good: the execution's cost, and
--   every window's cost total of its tenant, read null from then on; two costs near
--   1e308 overflowed the sum alike. A cost counts only when it is a finite number from
--   0 to a trillion USD; anything else is 0.
--
-- A view holds the functions it calls as they were when its query was set, so each view
-- that calls a changed one has its query set again below (an atomic swap: no insert is
-- missed). Rows stored before keep how they were read then.
CREATE OR REPLACE FUNCTION spanhouse_is_error AS (status_code, attrs) ->
    status_code NOT IN ('Ok', 'STATUS_CODE_OK')
    AND (status_code IN ('Error', 'STATUS_CODE_ERROR') OR attrs['error.type'] != '');

-- The error type and message of a span that failed, '' for one that did not.
CREATE FUNCTION IF NOT EXISTS spanhouse_failure_type AS (status_code, attrs, event_names, event_attrs) ->
    if(spanhouse_is_error(status_code, attrs), spanhouse_error_type(attrs, event_names, event_attrs), '');

CREATE FUNCTION IF NOT EXISTS spanhouse_failure_message AS (status_code, attrs, status_message, event_names, event_attrs) ->
    if(spanhouse_is_error(status_code, attrs), spanhouse_error_message(status_message, event_names, event_attrs), '');

CREATE OR REPLACE FUNCTION spanhouse_tool_name AS (attrs, span_name) -> multiIf(
    attrs['gen_ai.tool.name'] != '', attrs['gen_ai.tool.name'],
    attrs['tool.name'] != '', attrs['tool.name'],
    attrs['traceloop.entity.name'] != '', attrs['traceloop.entity.name'],
    attrs['gen_ai.operation.name'] = 'execute_tool' AND startsWith(span_name, 'execute_tool ')
        AND length(span_name) > 13, substring(span_name, 14),
    span_name);

CREATE OR REPLACE FUNCTION spanhouse_input_tokens AS (attrs) ->
    toUInt64OrZero(multiIf(attrs['gen_ai.usage.input_tokens'] != '', attrs['gen_ai.usage.input_tokens'],
                           attrs['gen_ai.usage.prompt_tokens'] != '', attrs['gen_ai.usage.prompt_tokens'],
                           attrs['llm.token_count.prompt']));

CREATE OR REPLACE FUNCTION spanhouse_output_tokens AS (attrs) ->
    toUInt64OrZero(multiIf(attrs['gen_ai.usage.output_tokens'] != '', attrs['gen_ai.usage.output_tokens'],
                           attrs['gen_ai.usage.completion_tokens'] != '', attrs['gen_ai.usage.completion_tokens'],
                           attrs['llm.token_count.completion']));

CREATE FUNCTION IF NOT EXISTS spanhouse_usd AS (c) -> if(isFinite(c) AND c >= 0 AND c < 1e12, c, 0);

CREATE OR REPLACE FUNCTION spanhouse_cost_usd AS (attrs) ->
    spanhouse_usd(toFloat64OrZero(if(attrs['spanhouse.cost_usd'] != '', attrs['spanhouse.cost_usd'],
                                     attrs['llm.cost.total'])));

-- A span that stands for the work under it (an agent, a workflow, a chain) rather
-- than for one model call.
CREATE FUNCTION IF NOT EXISTS spanhouse_is_aggregate AS (attrs) ->
    attrs['gen_ai.operation.name'] IN ('invoke_agent', 'create_agent', 'invoke_workflow')
    OR attrs['openinference.span.kind'] IN ('AGENT', 'CHAIN')
    OR attrs['traceloop.span.kind'] IN ('workflow', 'agent', 'task');

-- An execution's (input tokens, output tokens, cost) from its rollup sums: its model
-- calls' tokens when they carry any, else its agent and workflow spans'; the same for
-- the cost on its own (calls that carry tokens but no cost, as OpenLLMetry's, keep the
-- cost an agent span records). Each is compared with 0 apart: a sum would wrap.
CREATE FUNCTION IF NOT EXISTS spanhouse_trace_usage AS (model_in, model_out, model_cost, agent_in, agent_out, agent_cost) ->
    (if(model_in > 0 OR model_out > 0, model_in, agent_in), if(model_in > 0 OR model_out > 0, model_out, agent_out),
     if(model_cost > 0, model_cost, agent_cost));

ALTER TABLE execution_rollup
    ADD COLUMN IF NOT EXISTS AgentInputTokens SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS AgentOutputTokens SimpleAggregateFunction(sum, UInt64) DEFAULT 0,
    ADD COLUMN IF NOT EXISTS AgentCostUsd SimpleAggregateFunction(sum, Float64) DEFAULT 0;

-- 0004's view, with a failed call's error type and message only.
ALTER TABLE tool_calls_mv MODIFY QUERY
SELECT
    Tenant,
    Timestamp,
    TraceId,
    SpanId,
    ParentSpanId,
    ServiceName,
    spanhouse_tool_name(SpanAttributes, SpanName) AS ToolName,
    SpanAttributes['gen_ai.tool.type'] AS ToolType,
    if(SpanAttributes['gen_ai.tool.call.id'] != '', SpanAttributes['gen_ai.tool.call.id'], SpanAttributes['tool.id']) AS CallId,
    SpanAttributes['gen_ai.agent.name'] AS AgentName,
    Duration AS DurationNs,
    spanhouse_is_error(StatusCode, SpanAttributes) AS IsError,
    spanhouse_failure_type(StatusCode, SpanAttributes, `Events.Name`, `Events.Attributes`) AS ErrorType,
    spanhouse_failure_message(StatusCode, SpanAttributes, StatusMessage, `Events.Name`, `Events.Attributes`)
        AS ErrorMessage,
    leftUTF8(multiIf(SpanAttributes['gen_ai.tool.call.arguments'] != '', SpanAttributes['gen_ai.tool.call.arguments'],
                     SpanAttributes['input.value'] != '', SpanAttributes['input.value'],
                     SpanAttributes['traceloop.entity.input']), 1000) AS Arguments,
    leftUTF8(multiIf(SpanAttributes['gen_ai.tool.call.result'] != '', SpanAttributes['gen_ai.tool.call.result'],
                     SpanAttributes['output.value'] != '', SpanAttributes['output.value'],
                     SpanAttributes['traceloop.entity.output']), 1000) AS Result
FROM otel_traces
WHERE spanhouse_is_tool(SpanAttributes);

-- 0005's views: a successful execution's root has no error message or type; and the
-- rollup's failures, tokens and cost as above.
ALTER TABLE executions_mv MODIFY QUERY
SELECT
    Tenant,
    Timestamp AS StartTime,
    TraceId,
    SpanId,
    ServiceName,
    multiIf(SpanAttributes['gen_ai.workflow.name'] != '', SpanAttributes['gen_ai.workflow.name'],
            SpanAttributes['gen_ai.agent.name'] != '', SpanAttributes['gen_ai.agent.name'],
            SpanAttributes['traceloop.entity.name'] != '', SpanAttributes['traceloop.entity.name'],
            SpanName) AS Name,
    SpanName,
    multiIf(SpanAttributes['gen_ai.operation.name'] != '', SpanAttributes['gen_ai.operation.name'],
            SpanAttributes['openinference.span.kind'] != '', lower(SpanAttributes['openinference.span.kind']),
            SpanAttributes['traceloop.span.kind'] != '', SpanAttributes['traceloop.span.kind'],
            'span') AS Type,
    multiIf(spanhouse_is_marker(SpanAttributes), 'running',
            spanhouse_is_error(StatusCode, SpanAttributes), 'error', 'ok') AS Status,
    spanhouse_failure_message(StatusCode, SpanAttributes, StatusMessage, `Events.Name`, `Events.Attributes`)
        AS StatusMessage,
    spanhouse_failure_type(StatusCode, SpanAttributes, `Events.Name`, `Events.Attributes`) AS ErrorType,
    if(spanhouse_is_marker(SpanAttributes), 0, Duration) AS DurationNs,
    multiIf(SpanAttributes['user.id'] != '', SpanAttributes['user.id'],
            SpanAttributes['enduser.id'] != '', SpanAttributes['enduser.id'], ResourceAttributes['user.id']) AS UserId,
    multiIf(SpanAttributes['session.id'] != '', SpanAttributes['session.id'],
            SpanAttributes['gen_ai.conversation.id']) AS SessionId,
    leftUTF8(multiIf(SpanAttributes['input.value'] != '', SpanAttributes['input.value'],
                     SpanAttributes['spanhouse.input'] != '', SpanAttributes['spanhouse.input'],
                     SpanAttributes['gen_ai.input.messages'] != '', SpanAttributes['gen_ai.input.messages'],
                     SpanAttributes['traceloop.entity.input']), 1000) AS Input,
    leftUTF8(multiIf(SpanAttributes['output.value'] != '', SpanAttributes['output.value'],
                     SpanAttributes['spanhouse.output'] != '', SpanAttributes['spanhouse.output'],
                     SpanAttributes['gen_ai.output.messages'] != '', SpanAttributes['gen_ai.output.messages'],
                     SpanAttributes['traceloop.entity.output']), 1000) AS Output,
    if(spanhouse_is_marker(SpanAttributes), 0, 1) AS Version
FROM otel_traces
WHERE ParentSpanId = '' AND SpanName != 'spanhouse.feedback';

ALTER TABLE execution_rollup_mv MODIFY QUERY
SELECT
    Tenant,
    TraceId,
    count() AS Spans,
    countIf(spanhouse_is_error(StatusCode, SpanAttributes)) AS ErrorSpans,
    countIf(spanhouse_is_tool(SpanAttributes)) AS ToolCalls,
    countIf(spanhouse_is_tool(SpanAttributes) AND spanhouse_is_error(StatusCode, SpanAttributes)) AS FailedToolCalls,
    sumIf(spanhouse_input_tokens(SpanAttributes), NOT spanhouse_is_aggregate(SpanAttributes)) AS InputTokens,
    sumIf(spanhouse_output_tokens(SpanAttributes), NOT spanhouse_is_aggregate(SpanAttributes)) AS OutputTokens,
    sumIf(spanhouse_cost_usd(SpanAttributes), NOT spanhouse_is_aggregate(SpanAttributes)) AS CostUsd,
    min(Timestamp) AS FirstSeen,
    max(Timestamp + toIntervalNanosecond(Duration)) AS LastSeen,
    groupUniqArrayIf(spanhouse_tool_name(SpanAttributes, SpanName), spanhouse_is_tool(SpanAttributes)) AS ToolNames,
    sumIf(spanhouse_input_tokens(SpanAttributes), spanhouse_is_aggregate(SpanAttributes)) AS AgentInputTokens,
    sumIf(spanhouse_output_tokens(SpanAttributes), spanhouse_is_aggregate(SpanAttributes)) AS AgentOutputTokens,
    sumIf(spanhouse_cost_usd(SpanAttributes), spanhouse_is_aggregate(SpanAttributes)) AS AgentCostUsd
FROM otel_traces
WHERE NOT spanhouse_is_marker(SpanAttributes) AND SpanName != 'spanhouse.feedback'
GROUP BY Tenant, TraceId;

-- 0006's view: a span set to OK is no failure.
ALTER TABLE error_patterns_mv MODIFY QUERY
SELECT
    Tenant,
    toDate(Timestamp) AS Day,
    ServiceName,
    if(spanhouse_is_tool(SpanAttributes), spanhouse_tool_name(SpanAttributes, SpanName), SpanName) AS ToolName,
    spanhouse_is_tool(SpanAttributes) AS IsTool,
    spanhouse_error_pattern(spanhouse_error_type(SpanAttributes, `Events.Name`, `Events.Attributes`),
                            spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS Pattern,
    count() AS Count,
    min(Timestamp) AS FirstSeen,
    max(Timestamp) AS LastSeen,
    anyLast(spanhouse_error_message(StatusMessage, `Events.Name`, `Events.Attributes`)) AS SampleMessage,
    anyLast(TraceId) AS SampleTraceId
FROM otel_traces
WHERE spanhouse_is_error(StatusCode, SpanAttributes)
GROUP BY Tenant, Day, ServiceName, ToolName, IsTool, Pattern;

-- A rollup row already holding a cost no span may have now (NaN, infinity, negative, or
-- past 1e12, which summed to infinity) cannot be told apart into its spans' costs any
-- more (the mutation may not read otel_traces): its cost becomes 0, as an unknown one;
-- its other figures are kept. Waited for, so the collector starts serving repaired sums.
ALTER TABLE execution_rollup UPDATE CostUsd = 0 WHERE NOT (isFinite(CostUsd) AND CostUsd >= 0 AND CostUsd < 1e12)
SETTINGS mutations_sync = 2;

-- 0007's analyst view, with each execution's usage as above.
CREATE OR REPLACE VIEW v_executions AS
SELECT
    e.Tenant AS Tenant,
    e.TraceId AS TraceId,
    e.StartTime AS StartTime,
    e.ServiceName AS ServiceName,
    e.Name AS Name,
    e.Type AS Type,
    e.Status AS Status,
    e.StatusMessage AS StatusMessage,
    e.ErrorType AS ErrorType,
    round(e.DurationNs / 1e6, 3) AS duration_ms,
    e.UserId AS UserId,
    e.SessionId AS SessionId,
    e.Input AS Input,
    e.Output AS Output,
    r.spans AS spans,
    r.error_spans AS error_spans,
    r.tool_calls AS tool_calls,
    r.failed_tool_calls AS failed_tool_calls,
    r.usage.1 AS input_tokens,
    r.usage.2 AS output_tokens,
    r.usage.3 AS cost_usd,
    r.tool_names AS tool_names
FROM executions AS e FINAL
LEFT JOIN
(
    SELECT Tenant, TraceId,
           sum(Spans) AS spans, sum(ErrorSpans) AS error_spans, sum(ToolCalls) AS tool_calls,
           sum(FailedToolCalls) AS failed_tool_calls,
           spanhouse_trace_usage(sum(InputTokens), sum(OutputTokens), sum(CostUsd),
                                 sum(AgentInputTokens), sum(AgentOutputTokens), sum(AgentCostUsd)) AS usage,
           groupUniqArrayArray(ToolNames) AS tool_names
    FROM execution_rollup
    GROUP BY Tenant, TraceId
) AS r ON r.Tenant = e.Tenant AND r.TraceId = e.TraceId;
