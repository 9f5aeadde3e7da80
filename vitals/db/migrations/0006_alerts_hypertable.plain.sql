-- Plain PostgreSQL: alerts stays a plain table, and keeps the old key's guarantee as a
-- unique index beside the new primary key. Nothing changes in what is unique (the alert id
-- determines the episode start), but the previous release's alerts sink, whose statement
-- says ON CONFLICT (alert_id, state), keeps working here during a rolling upgrade or after
-- a rollback. (A hypertable cannot have it: every unique index must hold episode_start.)
CREATE UNIQUE INDEX IF NOT EXISTS alerts_alert_state ON alerts (alert_id, state);
