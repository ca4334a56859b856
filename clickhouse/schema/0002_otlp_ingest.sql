-- The fast write path: OTLP protobuf requests are parsed by ClickHouse itself (format
-- Protobuf with clickhouse/otlp_ingest.proto) into the Null table otlp_ingest; the
-- materialized view below flattens them into otel_traces, rendering every attribute
-- value exactly as the OpenTelemetry Collector's pdata `Value.AsString()` does, so no
-- Python runs per span.
--
-- The SQL renders scalars and arrays of scalars: every attribute the OpenTelemetry
-- SDKs produce. Anything else (a map value, an array inside an array, an empty value or
-- array, a control character or non-finite double inside an array) raises an error
-- whose message starts with SPANHOUSE_EXACT_PATH. It fires while the view computes
-- its rows, before anything is written, and the writer then lands that batch through
-- its exact Python renderer (spanhouse/clickhouse/otlp_rows.py). Keeping the
-- expressions small matters: the view is analysed again for every insert.

-- Raised where the SQL cannot be exact. The condition is the row's own, never a
-- constant, so nothing throws for rows that do not reach the branch whether or not
-- the engine short-circuits the surrounding if/multiIf.
CREATE FUNCTION IF NOT EXISTS spanhouse_exact_path AS (cond, why) ->
    toString(throwIf(cond, concat('SPANHOUSE_EXACT_PATH: ', why)));

-- A JSON string as Go's json.Marshal writes it: \ " \n \r \t \b \f escaped, and the
-- HTML characters < > & and U+2028/U+2029 as \uXXXX. Other control characters
-- (written as \u00xx by Go) take the exact path.
CREATE FUNCTION IF NOT EXISTS spanhouse_json_string AS (js) -> concat('"',
    if(match(js, '[\\x00-\\x1f"\\\\<>&\\x{2028}\\x{2029}]'),
       if(match(js, '[\\x00-\\x07\\x0b\\x0e-\\x1f]'),
          spanhouse_exact_path(match(js, '[\\x00-\\x07\\x0b\\x0e-\\x1f]'), 'control character inside an array'),
          replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(replaceAll(
          replaceAll(replaceAll(replaceAll(js, '\\', '\\\\'), '"', '\\"'), '\n', '\\n'), '\r', '\\r'),
          '\t', '\\t'), '\b', '\\b'), '\f', '\\f'), '<', '\\u003c'), '>', '\\u003e'), '&', '\\u0026'),
          '\xE2\x80\xA8', '\\u2028'), '\xE2\x80\xA9', '\\u2029')),
       js),
    '"');

-- A finite float64 as Go's pdata float64AsString: shortest round-trip digits, fixed
-- notation for 1e-6 <= |d| < 1e21, else exponent with an explicit sign (1e+21, 1e-7).
-- ClickHouse's toString already picks the same digits and the same cut-offs.
CREATE FUNCTION IF NOT EXISTS spanhouse_go_float AS (d) ->
    replaceRegexpOne(toString(d), 'e([0-9])', 'e+\\1');

-- An array element as a JSON value (json.Marshal of AsRaw()).
CREATE FUNCTION IF NOT EXISTS spanhouse_element_json AS (v1) -> multiIf(
    tupleElement(v1, 'string_value') IS NOT NULL, spanhouse_json_string(tupleElement(v1, 'string_value')),
    tupleElement(v1, 'bool_value') IS NOT NULL, if(tupleElement(v1, 'bool_value'), 'true', 'false'),
    tupleElement(v1, 'int_value') IS NOT NULL, toString(tupleElement(v1, 'int_value')),
    isFinite(ifNull(tupleElement(v1, 'double_value'), nan)), spanhouse_go_float(tupleElement(v1, 'double_value')),
    tupleElement(v1, 'bytes_value') IS NOT NULL, concat('"', base64Encode(tupleElement(v1, 'bytes_value')), '"'),
    tupleElement(v1, 'double_value') IS NULL AND tupleElement(v1, 'array_value') IS NULL
        AND tupleElement(v1, 'kvlist_value') IS NULL, 'null',
    spanhouse_exact_path(NOT isFinite(ifNull(tupleElement(v1, 'double_value'), 0)) OR tupleElement(v1, 'array_value') IS NOT NULL
                         OR tupleElement(v1, 'kvlist_value') IS NOT NULL, 'map, nested array or NaN inside an array'));

-- An attribute value as pdata Value.AsString().
CREATE FUNCTION IF NOT EXISTS spanhouse_anyvalue_string AS (v0) -> multiIf(
    tupleElement(v0, 'string_value') IS NOT NULL, tupleElement(v0, 'string_value'),
    tupleElement(v0, 'bool_value') IS NOT NULL, if(tupleElement(v0, 'bool_value'), 'true', 'false'),
    tupleElement(v0, 'int_value') IS NOT NULL, toString(tupleElement(v0, 'int_value')),
    tupleElement(v0, 'double_value') IS NOT NULL,
        if(isFinite(tupleElement(v0, 'double_value')), spanhouse_go_float(tupleElement(v0, 'double_value')),
           concat('json: unsupported value: ', multiIf(isNaN(tupleElement(v0, 'double_value')), 'NaN',
                                                      tupleElement(v0, 'double_value') > 0, '+Inf', '-Inf'))),
    tupleElement(v0, 'bytes_value') IS NOT NULL, base64Encode(tupleElement(v0, 'bytes_value')),
    notEmpty(tupleElement(tupleElement(v0, 'array_value'), 'values')),
        concat('[', arrayStringConcat(arrayMap(x1 -> spanhouse_element_json(x1),
                                               tupleElement(tupleElement(v0, 'array_value'), 'values')), ','), ']'),
    spanhouse_exact_path(empty(tupleElement(tupleElement(v0, 'array_value'), 'values'))
                         AND tupleElement(v0, 'string_value') IS NULL AND tupleElement(v0, 'bool_value') IS NULL
                         AND tupleElement(v0, 'int_value') IS NULL AND tupleElement(v0, 'double_value') IS NULL
                         AND tupleElement(v0, 'bytes_value') IS NULL, 'map, empty value or empty array'));

-- Values are never NULL (a missing key then reads as '', as in the exporter's Map column).
CREATE FUNCTION IF NOT EXISTS spanhouse_attributes AS (kvs) ->
    mapFromArrays(arrayMap(kv -> tupleElement(kv, 'key'), kvs),
                  arrayMap(kv -> assumeNotNull(spanhouse_anyvalue_string(tupleElement(kv, 'value'))), kvs));

-- pdata's TraceIDToHexOrEmptyString / SpanIDToHexOrEmptyString.
CREATE FUNCTION IF NOT EXISTS spanhouse_hex_id AS (b) ->
    if(length(replaceAll(b, '\0', '')) = 0, '', lower(hex(b)));

CREATE TABLE IF NOT EXISTS otlp_ingest
(
    tenant String,
    resource_spans Array(Tuple(
        resource Tuple(attributes Array(Tuple(key String, value {{ANYVALUE0}}))),
        scope_spans Array(Tuple(
            scope Tuple(name String, version String),
            spans Array(Tuple(
                trace_id String,
                span_id String,
                trace_state String,
                parent_span_id String,
                name String,
                kind Int32,
                start_time_unix_nano UInt64,
                end_time_unix_nano UInt64,
                attributes Array(Tuple(key String, value {{ANYVALUE0}})),
                events Array(Tuple(time_unix_nano UInt64, name String,
                                   attributes Array(Tuple(key String, value {{ANYVALUE0}})))),
                links Array(Tuple(trace_id String, span_id String, trace_state String,
                                  attributes Array(Tuple(key String, value {{ANYVALUE0}})))),
                status Tuple(message String, code Int32)))))))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS otlp_ingest_mv TO otel_traces AS
SELECT
    fromUnixTimestamp64Nano(toInt64(s.start_time_unix_nano)) AS Timestamp,
    spanhouse_hex_id(s.trace_id) AS TraceId,
    spanhouse_hex_id(s.span_id) AS SpanId,
    spanhouse_hex_id(s.parent_span_id) AS ParentSpanId,
    s.trace_state AS TraceState,
    s.name AS SpanName,
    transform(s.kind, [0, 1, 2, 3, 4, 5],
              ['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer'], '') AS SpanKind,
    service_name AS ServiceName,
    resource_attributes AS ResourceAttributes,
    scope_name AS ScopeName,
    scope_version AS ScopeVersion,
    spanhouse_attributes(s.attributes) AS SpanAttributes,
    s.end_time_unix_nano - s.start_time_unix_nano AS Duration,
    transform(s.status.code, [0, 1, 2], ['Unset', 'Ok', 'Error'], '') AS StatusCode,
    s.status.message AS StatusMessage,
    arrayMap(e -> fromUnixTimestamp64Nano(toInt64(e.time_unix_nano)), s.events) AS `Events.Timestamp`,
    arrayMap(e -> e.name, s.events) AS `Events.Name`,
    arrayMap(e -> spanhouse_attributes(e.attributes), s.events) AS `Events.Attributes`,
    arrayMap(l -> spanhouse_hex_id(l.trace_id), s.links) AS `Links.TraceId`,
    arrayMap(l -> spanhouse_hex_id(l.span_id), s.links) AS `Links.SpanId`,
    arrayMap(l -> l.trace_state, s.links) AS `Links.TraceState`,
    arrayMap(l -> spanhouse_attributes(l.attributes), s.links) AS `Links.Attributes`,
    tenant AS Tenant
FROM
(
    -- Resource and scope values are rendered once per scope, not once per span.
    SELECT
        tenant,
        spanhouse_attributes(rs.resource.attributes) AS resource_attributes,
        resource_attributes['service.name'] AS service_name,
        ss.scope.name AS scope_name,
        ss.scope.version AS scope_version,
        ss.spans AS spans
    FROM otlp_ingest
    ARRAY JOIN resource_spans AS rs
    ARRAY JOIN rs.scope_spans AS ss
)
ARRAY JOIN spans AS s;
