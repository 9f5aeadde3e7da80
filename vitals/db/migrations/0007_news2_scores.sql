-- NEWS2 scores as the processor computed them: one row per patient and score time, written
-- by the timescale sink from vitals.news2 (docs/scores.md). The processor publishes a score
-- only when its total, band or parameter set changes, so a patient's rows are a step
-- function: the score at any time is the latest row at or before it.
-- (patient_id, t) is the key: a re-computation of the same moment (late data) replaces the
-- row, and a redelivered record changes nothing. It also serves "latest score at or before
-- t" and a patient's history in time order.
CREATE TABLE IF NOT EXISTS news2_scores (
    patient_id  text        NOT NULL,
    t           timestamptz NOT NULL,
    news2       smallint    NOT NULL,
    band        text        NOT NULL CHECK (band IN ('zero', 'low', 'low-medium', 'medium', 'high')),
    red         boolean     NOT NULL,
    partial     boolean     NOT NULL,
    spo2_scale  smallint    NOT NULL CHECK (spo2_scale IN (1, 2)),
    parameters  jsonb       NOT NULL,
    computed_at timestamptz NOT NULL,
    PRIMARY KEY (patient_id, t)
);

COMMENT ON TABLE news2_scores IS
    'NEWS2 score changes per patient, as the processor computed them (step function in t).';
COMMENT ON COLUMN news2_scores.t IS 'event time of the reading the score was computed at';
COMMENT ON COLUMN news2_scores.parameters IS
    '{parameter: {"points", "value", "age_ms"}} for each parameter used; the others were missing';
COMMENT ON COLUMN news2_scores.computed_at IS 'wall clock when the processor computed it';

-- The sink writes (and a re-computation updates) scores; readers read them.
GRANT SELECT, INSERT, UPDATE ON news2_scores TO vitals_sink;
GRANT SELECT ON news2_scores TO vitals_reader;
