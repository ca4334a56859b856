SELECT count() AS total
FROM executions AS e FINAL
WHERE e.Tenant = {tenant:String} {{filters}}
