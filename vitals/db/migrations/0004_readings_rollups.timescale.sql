-- Continuous aggregates: materialized incrementally by background refresh policies.
-- WITH NO DATA because a migration runs in a transaction, where a continuous aggregate
-- cannot be filled; the refresh policies fill it. Both are computed from raw readings (not
-- the hourly from the minute one) so each stays correct on its own; refreshes only
-- recompute buckets whose raw rows changed, so a wide refresh window costs little when
-- nothing late arrived.

-- Per minute: materialized only. Its policy runs every minute, so at most the last
-- 3 minutes are missing; trend charts over hours and days read only the stored rows and
-- never scan the raw hypertable as well.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT time_bucket(INTERVAL '1 minute', t) AS bucket,
       patient_id,
       metric,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*)   AS n
FROM readings
GROUP BY bucket, patient_id, metric
WITH NO DATA;

-- The last 7 days are kept in step with raw data: late uploads (a gateway offline for
-- hours, or days) invalidate their buckets and the next run recomputes them. Older
-- buckets stay as materialized, also after retention drops their raw chunks.
SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset      => INTERVAL '7 days',
    end_offset        => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute',
    if_not_exists     => TRUE);

-- Per hour: real-time (materialized_only = false). Its policy materializes only buckets
-- that ended over an hour ago and runs every 30 minutes, so the newest one to two and a
-- half hours would be missing from every hourly chart; real-time aggregation fills them
-- from raw readings at query time (a small, recent, uncompressed range). Caveat: a late
-- reading in an already materialized hour shows after the next refresh, not at once.
CREATE MATERIALIZED VIEW IF NOT EXISTS readings_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', t) AS bucket,
       patient_id,
       metric,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*)   AS n
FROM readings
GROUP BY bucket, patient_id, metric
WITH NO DATA;

-- Long-range charts read this view, so its window reaches back 30 days: a kiosk offline
-- for weeks still gets its hourly rows. 30 days stays far inside raw retention (0003).
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset      => INTERVAL '30 days',
    end_offset        => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes',
    if_not_exists     => TRUE);
