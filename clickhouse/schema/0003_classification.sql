-- How spanhouse reads a span, defined once and used by every view below. All take the
-- exporter's string-valued attribute map, so they work whoever wrote otel_traces.

-- A tool call, in any of the three conventions in use: OpenTelemetry GenAI,
-- OpenInference (Phoenix) and OpenLLMetry (Traceloop).
CREATE FUNCTION IF NOT EXISTS spanhouse_is_tool AS (attrs) ->
    attrs['gen_ai.operation.name'] = 'execute_tool'
    OR attrs['openinference.span.kind'] = 'TOOL'
    OR attrs['traceloop.span.kind'] = 'tool';

CREATE FUNCTION IF NOT EXISTS spanhouse_tool_name AS (attrs, span_name) -> multiIf(
    attrs['gen_ai.tool.name'] != '', attrs['gen_ai.tool.name'],
    attrs['tool.name'] != '', attrs['tool.name'],
    attrs['traceloop.entity.name'] != '', attrs['traceloop.entity.name'],
    span_name);

-- Failure: span status ERROR (either string form the exporter has used) or error.type.
CREATE FUNCTION IF NOT EXISTS spanhouse_is_error AS (status_code, attrs) ->
    status_code IN ('Error', 'STATUS_CODE_ERROR') OR attrs['error.type'] != '';

-- The error text: the status message, else the first exception event's message.
CREATE FUNCTION IF NOT EXISTS spanhouse_error_message AS (status_message, event_names, event_attrs) ->
    if(status_message != '', status_message,
       if(has(event_names, 'exception'), event_attrs[indexOf(event_names, 'exception')]['exception.message'], ''));

CREATE FUNCTION IF NOT EXISTS spanhouse_error_type AS (attrs, event_names, event_attrs) ->
    if(attrs['error.type'] != '', attrs['error.type'],
       if(has(event_names, 'exception'), event_attrs[indexOf(event_names, 'exception')]['exception.type'], ''));

-- Groups error messages that differ only in ids, numbers or quoted values.
CREATE FUNCTION IF NOT EXISTS spanhouse_error_pattern AS (error_type, message) ->
    if(error_type != '', error_type,
       leftUTF8(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(message,
           '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<uuid>'),
           '\'[^\']*\'|"[^"]*"', '<str>'),
           '\\b(0x)?[0-9a-fA-F]*[0-9][0-9a-fA-F]*\\b', '<n>'),
           '\\s+', ' '), 200));

-- Token usage and cost: GenAI conventions first, then OpenInference; cost from the
-- spanhouse SDK (spanhouse.cost_usd) or OpenInference (llm.cost.total), in USD.
CREATE FUNCTION IF NOT EXISTS spanhouse_input_tokens AS (attrs) ->
    toUInt64OrZero(if(attrs['gen_ai.usage.input_tokens'] != '', attrs['gen_ai.usage.input_tokens'],
                      attrs['llm.token_count.prompt']));

CREATE FUNCTION IF NOT EXISTS spanhouse_output_tokens AS (attrs) ->
    toUInt64OrZero(if(attrs['gen_ai.usage.output_tokens'] != '', attrs['gen_ai.usage.output_tokens'],
                      attrs['llm.token_count.completion']));

CREATE FUNCTION IF NOT EXISTS spanhouse_cost_usd AS (attrs) ->
    toFloat64OrZero(if(attrs['spanhouse.cost_usd'] != '', attrs['spanhouse.cost_usd'], attrs['llm.cost.total']));

-- The SDK's start marker of a running execution (a span that is not work itself).
CREATE FUNCTION IF NOT EXISTS spanhouse_is_marker AS (attrs) ->
    attrs['spanhouse.execution.state'] = 'running';
