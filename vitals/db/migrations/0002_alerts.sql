-- Alerts: every state change of a clinical episode, as stored by the alerts sink.
-- (alert_id, state) is unique: an episode is opened once and resolved once, however often
-- the detection is redelivered. published_at stays NULL until vitals.alerts acknowledged
-- the public alert; the sink publishes only rows still NULL, so a state is published once.
CREATE TABLE alerts (
    alert_id      uuid             NOT NULL,
    state         text             NOT NULL CHECK (state IN ('opened', 'resolved')),
    patient_id    text             NOT NULL,
    rule          text             NOT NULL,
    severity      text             NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    retrospective boolean          NOT NULL,
    episode_start timestamptz      NOT NULL,
    at            timestamptz      NOT NULL,
    detected_at   timestamptz      NOT NULL,
    metric        text,
    value         double precision,
    device_id     text,
    detail        text             NOT NULL DEFAULT '',
    published_at  timestamptz,
    PRIMARY KEY (alert_id, state)
);

COMMENT ON TABLE alerts IS
    'Episode state changes (opened/resolved); published_at is set once vitals.alerts acknowledged it.';
COMMENT ON COLUMN alerts.retrospective IS
    'detected on late data: recorded and published, never paged';

-- A patient's alerts, newest first (console, read API).
CREATE INDEX alerts_patient_at ON alerts (patient_id, at DESC);
-- Open work for the publisher and for an operator checking that nothing is stuck.
CREATE INDEX alerts_unpublished ON alerts (detected_at) WHERE published_at IS NULL;
