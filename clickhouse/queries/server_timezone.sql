-- The store's time zone: text formats write DateTime values in it, and the SQL endpoint
-- says so in X-ClickHouse-Timezone as a server does (the embedded engine takes the
-- collector's TZ, so it is often not UTC).
SELECT timezone() AS timezone
