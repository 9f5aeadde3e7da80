-- Plain PostgreSQL: views, computed at query time. There is no scheduler here to refresh
-- a materialized view, and a view is never stale. date_bin with origin 2000-01-01 UTC
-- gives the same minute and hour buckets as TimescaleDB's time_bucket.
-- Indexes: a patient's series is a range of the primary key (patient_id, metric, t, ...);
-- the BRIN index on t (0001) serves ranges over all patients. A filter on bucket is not
-- turned into one on t by the planner, so a query scans the patient's whole series for
-- that metric: fine at the scale plain PostgreSQL is meant for (development, small sites).
CREATE OR REPLACE VIEW readings_1m AS
SELECT date_bin(INTERVAL '1 minute', t, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       patient_id,
       metric,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*)   AS n
FROM readings
GROUP BY 1, patient_id, metric;

CREATE OR REPLACE VIEW readings_1h AS
SELECT date_bin(INTERVAL '1 hour', t, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       patient_id,
       metric,
       min(value) AS min_value,
       max(value) AS max_value,
       avg(value) AS avg_value,
       count(*)   AS n
FROM readings
GROUP BY 1, patient_id, metric;
