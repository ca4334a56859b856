spanhouse_trace_usage(sum(InputTokens), sum(OutputTokens), sum(CostUsd),
                      sum(AgentInputTokens), sum(AgentOutputTokens), sum(AgentCostUsd))
