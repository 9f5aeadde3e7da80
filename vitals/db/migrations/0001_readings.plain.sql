-- Plain PostgreSQL: the primary key (patient_id, metric, t, device_id) already serves a
-- patient's series per metric. A BRIN index on t serves time-range scans over everyone
-- (date_bin aggregates, retention deletes) at a tiny size, since rows arrive roughly in
-- time order.
CREATE INDEX readings_t_brin ON readings USING brin (t);
