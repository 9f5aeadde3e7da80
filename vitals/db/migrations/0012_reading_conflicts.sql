-- Conflicting values (docs/wire-format.md, "One value per reading"): the first value
-- stored for (patient, metric, t, device) is the reading of record; a later message with
-- another value for that key is not stored in readings but recorded here, so nothing the
-- gateway accepted vanishes without a trace. An exact repeat (same value) is a duplicate
-- and is recorded nowhere.
-- One row per distinct conflicting value of a key: a redelivered or retried conflicting
-- upload adds nothing (the sink's INSERT ... ON CONFLICT DO NOTHING), a third value adds
-- a row. Conflicts are rare, so a plain table on every engine (no hypertable, no
-- retention policy: delete them by hand with the readings they contradict).
CREATE TABLE IF NOT EXISTS reading_conflicts (
    patient_id        text             NOT NULL,
    metric            text             NOT NULL,
    t                 timestamptz      NOT NULL,
    device_id         text             NOT NULL,
    stored_value      double precision NOT NULL,
    conflicting_value double precision NOT NULL,
    unit              text             NOT NULL,
    upload_id         uuid             NOT NULL,
    received_at       timestamptz      NOT NULL,
    seen_at           timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (patient_id, metric, t, device_id, conflicting_value)
);
-- "Which conflicts arrived lately", for whoever follows them up.
CREATE INDEX IF NOT EXISTS reading_conflicts_seen ON reading_conflicts (seen_at);

COMMENT ON TABLE reading_conflicts IS
    'Values that contradicted a stored reading (same patient, metric, t, device); readings keeps the first.';
COMMENT ON COLUMN reading_conflicts.stored_value IS 'the value of record, in readings';
COMMENT ON COLUMN reading_conflicts.upload_id IS 'the upload that carried the conflicting value';
COMMENT ON COLUMN reading_conflicts.received_at IS 'when the gateway took that upload';
COMMENT ON COLUMN reading_conflicts.seen_at IS 'when the sink recorded the conflict';

-- The sink records conflicts; readers may see what contradicted a stored reading.
GRANT SELECT, INSERT ON reading_conflicts TO vitals_sink;
GRANT SELECT ON reading_conflicts TO vitals_reader;
