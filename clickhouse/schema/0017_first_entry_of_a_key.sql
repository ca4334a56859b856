-- A map as a reader should see it when a key was sent twice in one attribute list
-- (invalid OTLP, but it arrives): the first entry of each key. The SQL fast path stores
-- both entries, and a client reading the Map into a dictionary (the API's span detail)
-- kept the last one, while a lookup (m['key']: the views' tool name, error type) and
-- the Python exact path both take the first.
CREATE FUNCTION IF NOT EXISTS spanhouse_first_entries AS (m) ->
    mapFromArrays(arrayFilter((k, n) -> n = 1, mapKeys(m), arrayEnumerateUniq(mapKeys(m))),
                  arrayFilter((v, n) -> n = 1, mapValues(m), arrayEnumerateUniq(mapKeys(m))))
