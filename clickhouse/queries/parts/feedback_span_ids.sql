(SELECT FeedbackId FROM feedback
 WHERE Tenant = {tenant:String} AND TraceId IN {trace_ids:Array(String)} AND Source = 'otlp')
