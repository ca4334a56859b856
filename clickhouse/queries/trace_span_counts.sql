SELECT count() AS spans FROM otel_traces WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)}
