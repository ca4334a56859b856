-- Optional filters of the analytics queries (clickhouse/analytics.py). Each block is
-- one condition; queries.render puts the chosen ones where a query says {{filters}}.
-- Every block assumes the query binds {tenant:String}, {since:DateTime}, {until:DateTime}.
-- name
TraceId IN (SELECT TraceId FROM executions FINAL
            WHERE Tenant = {tenant:String} AND StartTime >= toDateTime64({since:DateTime}, 9) AND StartTime < toDateTime64({until:DateTime}, 9)
              AND Name = {name:String})
-- tool
ToolName = {tool:String}
