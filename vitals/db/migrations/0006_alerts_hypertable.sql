-- Alerts become a hypertable partitioned by episode_start (0006_alerts_hypertable.timescale.sql).
-- TimescaleDB requires every unique index of a hypertable to contain its partitioning
-- column, so the key grows from (alert_id, state) to (alert_id, state, episode_start), on
-- both servers: the alerts sink's one statement, ON CONFLICT (alert_id, state,
-- episode_start), then runs on either. Nothing changes in what is unique: the alert id is
-- derived from the patient, the rule and the episode start (vitals/contract.alert_id), so
-- one (alert_id, state) never comes with two episode starts. The lookups by
-- (alert_id, state) (publishing, marking published) still use the key's leading columns.
-- Idempotent: the key is replaced only while it is still the old one.
DO $$
DECLARE
    key_name    text;
    key_columns text[];
BEGIN
    SELECT c.conname, array_agg(a.attname::text ORDER BY k.ord)
      INTO key_name, key_columns
    FROM pg_constraint c
    CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
    WHERE c.conrelid = 'alerts'::regclass AND c.contype = 'p'
    GROUP BY c.conname;

    IF key_columns IS DISTINCT FROM ARRAY['alert_id', 'state', 'episode_start'] THEN
        IF key_name IS NOT NULL THEN
            EXECUTE format('ALTER TABLE alerts DROP CONSTRAINT %I', key_name);
        END IF;
        ALTER TABLE alerts ADD CONSTRAINT alerts_pkey PRIMARY KEY (alert_id, state, episode_start);
    END IF;
END
$$;
