-- Readings: one row per (patient, metric, event time, device).
-- The primary key is the idempotency key of the whole pipeline: Kafka delivers at least
-- once and the sink writes with ON CONFLICT DO NOTHING, so each reading is stored once.
-- Column order is the sink's COPY order (sinks/timescale/rows.py).
CREATE TABLE readings (
    patient_id  text             NOT NULL,
    metric      text             NOT NULL,
    t           timestamptz      NOT NULL,
    device_id   text             NOT NULL,
    value       double precision NOT NULL,
    unit        text             NOT NULL,
    upload_id   uuid             NOT NULL,
    received_at timestamptz      NOT NULL,
    PRIMARY KEY (patient_id, metric, t, device_id)
);

COMMENT ON TABLE readings IS
    'Vital-sign readings in canonical UCUM units; first write of a key wins (idempotent sink).';
COMMENT ON COLUMN readings.t IS 'event time of the reading (device clock, UTC)';
COMMENT ON COLUMN readings.received_at IS 'wall clock at the gateway when the upload arrived';
