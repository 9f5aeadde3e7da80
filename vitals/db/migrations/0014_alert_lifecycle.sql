-- The human side of an alert (issue 16): acknowledged by a reader, escalated when nobody
-- acknowledged it in time, and the outcome a nurse recorded. A table beside `alerts`
-- rather than more states in it: `alerts` holds what the detectors decided and is a
-- compressed hypertable; these rows are few, written by other processes (the read API
-- for people, the alerts sink for escalations) and read with their alert's opened row.
-- Re-appliable as a whole.
CREATE TABLE IF NOT EXISTS alert_lifecycle (
    alert_id      uuid        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('acknowledged', 'escalated', 'outcome')),
    -- escalated: the level reached (1, 2, ...); 0 for the other states. In the key, so an
    -- alert is acknowledged once, given one outcome, and escalated once per level however
    -- often (or by however many sinks) the escalation is decided.
    level         integer     NOT NULL DEFAULT 0,
    patient_id    text        NOT NULL,
    episode_start timestamptz NOT NULL,  -- with alert_id: finds the opened row's chunk
    at            timestamptz NOT NULL,  -- wall clock of the change
    actor_key_id  text,                  -- the reader key; NULL for an automatic escalation
    actor         text,                  -- the reader's name (principal)
    outcome       text CHECK (outcome IN ('contacted_no_action', 'advised',
                                          'escalated_to_physician', 'emergency_services',
                                          'sensor_problem', 'false_alarm')),
    -- Free text from a nurse: stored and shown to readers of the patient, never logged,
    -- never published on vitals.alerts.
    note          text CHECK (char_length(note) <= 2000),
    published_at  timestamptz,           -- set once vitals.alerts acknowledged it
    PRIMARY KEY (alert_id, state, level),
    CHECK ((state = 'escalated') = (level >= 1)),
    CHECK ((state = 'outcome') = (outcome IS NOT NULL)),
    CHECK (state = 'outcome' OR note IS NULL),
    CHECK ((state = 'escalated') = (actor_key_id IS NULL))
);

COMMENT ON TABLE alert_lifecycle IS
    'Human states of an alert (acknowledged, escalated, outcome); published as vitals.alert/2.';

-- The sink's publisher looks for these; few at any time.
CREATE INDEX IF NOT EXISTS alert_lifecycle_unpublished ON alert_lifecycle (at)
    WHERE published_at IS NULL;

-- The read API records people's actions (its only writes besides the read audit); the
-- alerts sink records escalations and marks rows published.
GRANT SELECT, INSERT ON alert_lifecycle TO vitals_reader;
GRANT SELECT, INSERT ON alert_lifecycle TO vitals_sink;
GRANT UPDATE (published_at) ON alert_lifecycle TO vitals_sink;
