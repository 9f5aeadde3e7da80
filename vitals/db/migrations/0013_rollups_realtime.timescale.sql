-- readings_1m becomes real-time like readings_1h: a query answers the buckets its refresh
-- policy has not materialized yet (after the watermark) from raw readings. Materialized
-- only, the view held nothing for the newest one to three minutes, and nothing at all
-- before the policy's first run: a monitoring chart must show the minute just stored.
-- The cost is a scan of the queried series' raw rows after the watermark (a minute or two
-- when the policy keeps up), measured on long ranges in docs/storage.md. Re-appliable.
ALTER MATERIALIZED VIEW readings_1m SET (timescaledb.materialized_only = false);
