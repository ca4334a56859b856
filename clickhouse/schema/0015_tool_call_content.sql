-- A tool call's arguments and result, in the three conventions, defined once for queries.
-- Why: the execution detail read only the GenAI and OpenInference keys, so an OpenLLMetry
-- tool span (traceloop.entity.input / output) showed no arguments or result although
-- tool_calls (0004, which keeps its own expression: applied views are not rewritten) had
-- them. The first non-empty value wins, as in tool_calls.
CREATE FUNCTION IF NOT EXISTS spanhouse_tool_arguments AS (attrs) -> multiIf(
    attrs['gen_ai.tool.call.arguments'] != '', attrs['gen_ai.tool.call.arguments'],
    attrs['input.value'] != '', attrs['input.value'],
    attrs['traceloop.entity.input']);

CREATE FUNCTION IF NOT EXISTS spanhouse_tool_result AS (attrs) -> multiIf(
    attrs['gen_ai.tool.call.result'] != '', attrs['gen_ai.tool.call.result'],
    attrs['output.value'] != '', attrs['output.value'],
    attrs['traceloop.entity.output']);
