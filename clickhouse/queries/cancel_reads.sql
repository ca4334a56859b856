-- Cancels the store's running reads (not this statement) at shutdown: the collector owns
-- an embedded store, and closing the engine under a query still running in another
-- thread (a long SQL-endpoint query, a request whose client went away) crashed the
-- process (SIGSEGV) instead of letting it exit 0. Only for the embedded store, where
-- every query is the collector's own.
KILL QUERY WHERE query_kind = 'Select' AND query_id != queryID() ASYNC
