"""Attribute names and values the SDK writes, in one place.

Each name is one that spanhouse's stored views read (clickhouse/schema/0003–0006): the
OpenTelemetry GenAI conventions (``gen_ai.*``, still *Development* upstream, so the
strings are pinned here rather than imported from ``opentelemetry-semantic-conventions``,
whose incubating module may rename them), the general ``session.id``/``user.id`` and
``error.type``, and spanhouse's own ``spanhouse.*`` for what no convention covers
(captured input/output, cost, the running marker, feedback).
"""

from __future__ import annotations

from typing import Final

# Operation: what a span does. The views classify by it (tool, agent, workflow, model call).
OPERATION_NAME: Final = "gen_ai.operation.name"
OP_EXECUTE_TOOL: Final = "execute_tool"
OP_INVOKE_AGENT: Final = "invoke_agent"
OP_INVOKE_WORKFLOW: Final = "invoke_workflow"
OP_CHAT: Final = "chat"

# Tools.
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_TYPE: Final = "gen_ai.tool.type"
TOOL_CALL_ID: Final = "gen_ai.tool.call.id"
TOOL_DESCRIPTION: Final = "gen_ai.tool.description"
TOOL_CALL_ARGUMENTS: Final = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT: Final = "gen_ai.tool.call.result"

# Agents and workflows (executions).
AGENT_NAME: Final = "gen_ai.agent.name"
AGENT_DESCRIPTION: Final = "gen_ai.agent.description"
WORKFLOW_NAME: Final = "gen_ai.workflow.name"

# Model calls and usage.
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
RESPONSE_MODEL: Final = "gen_ai.response.model"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
COST_USD: Final = "spanhouse.cost_usd"

# Sessions and users (stamped on every span inside ``session()``).
SESSION_ID: Final = "session.id"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
USER_ID: Final = "user.id"

# Errors (Stable in the general conventions); the exception event's text, as OpenTelemetry's record_exception writes it.
ERROR_TYPE: Final = "error.type"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_ESCAPED: Final = "exception.escaped"

# Captured content of spans that are not tool calls (executions, agents, model calls).
INPUT: Final = "spanhouse.input"
OUTPUT: Final = "spanhouse.output"

# The start marker of a running execution (0005_executions.sql replaces it by the root span).
EXECUTION_STATE: Final = "spanhouse.execution.state"
STATE_RUNNING: Final = "running"

# Feedback, sent as a span so that it travels over plain OTLP (0006_errors_feedback.sql).
FEEDBACK_SPAN_NAME: Final = "spanhouse.feedback"
FEEDBACK_EXECUTION_ID: Final = "spanhouse.feedback.execution_id"
FEEDBACK_NAME: Final = "spanhouse.feedback.name"
FEEDBACK_VALUE: Final = "spanhouse.feedback.value"
FEEDBACK_COMMENT: Final = "spanhouse.feedback.comment"
