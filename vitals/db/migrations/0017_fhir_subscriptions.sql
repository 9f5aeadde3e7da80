-- FHIR Subscriptions (issue 15, docs/fhir.md): EHR endpoints registered through the read
-- API (POST /fhir/r4/Subscription) and every notification owed to them, delivered by
-- `vitals sink fhir-notify`. Re-appliable as a whole.

-- A subscription belongs to the issued reader key that registered it and sees only that
-- key's patients, checked when an alert is queued and again before each attempt: a key
-- revoked, expired or moved off a team stops its notifications at once.
CREATE TABLE IF NOT EXISTS fhir_subscriptions (
    subscription_id uuid        PRIMARY KEY,
    key_id          text        NOT NULL,
    endpoint        text        NOT NULL CHECK (endpoint ~ '^https?://'),
    content         text        NOT NULL CHECK (content IN ('id-only', 'full-resource')),
    -- channel.header: "Name: value" lines sent with every notification (the endpoint's
    -- own credentials); never echoed by the API, never logged.
    headers         text[]      NOT NULL DEFAULT '{}',
    patient_id      text,       -- filter DetectedIssue?patient=; NULL: all the key's patients
    reason          text        NOT NULL,
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'off')),
    events          bigint      NOT NULL DEFAULT 0,  -- events-since-subscription-start
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS fhir_subscriptions_key ON fhir_subscriptions (key_id);

-- One row per (subscription, alert state change): the retry queue and its record. The key
-- makes a redelivered alert queue nothing twice; `event_number` is the notification's
-- number for its subscription (the IG's event-number), the same on every attempt.
CREATE TABLE IF NOT EXISTS fhir_notifications (
    subscription_id uuid        NOT NULL REFERENCES fhir_subscriptions ON DELETE CASCADE,
    alert_id        uuid        NOT NULL,
    state           text        NOT NULL,
    level           integer     NOT NULL DEFAULT 0,
    event_number    bigint      NOT NULL,
    patient_id      text        NOT NULL,
    event_at        timestamptz NOT NULL,  -- when vitals.alerts carried the change
    queued_at       timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- The outcome: delivered (a 2xx), dead-lettered (failing for longer than
    -- VITALS_FHIR_NOTIFY_DEAD_AFTER_S) or withdrawn (the patient left the key's scope).
    delivered_at    timestamptz,
    dead_at         timestamptz,
    withdrawn_at    timestamptz,
    PRIMARY KEY (subscription_id, alert_id, state, level),
    UNIQUE (subscription_id, event_number)
);
-- What the notifier polls: the pending, by when they are due.
CREATE INDEX IF NOT EXISTS fhir_notifications_due ON fhir_notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL AND withdrawn_at IS NULL;

-- The dead letters, for an operator: every notification given up on, with its last error.
CREATE OR REPLACE VIEW fhir_dead_letters AS
    SELECT n.subscription_id, s.endpoint, n.event_number, n.alert_id, n.state, n.level,
           n.patient_id, n.event_at, n.queued_at, n.attempts, n.dead_at, n.last_error
      FROM fhir_notifications n JOIN fhir_subscriptions s USING (subscription_id)
     WHERE n.dead_at IS NOT NULL;

-- May this reader key read this patient now: issued, neither revoked nor expired, and the
-- patient in its scope (all patients, or one of its teams). A function run with its
-- owner's rights, so that the notifier (vitals_sink, shared with the other sinks) learns
-- this one answer and never reads key digests or team lists.
CREATE OR REPLACE FUNCTION fhir_key_may_read(key text, patient text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM api_keys k
         WHERE k.key_id = key AND k.kind = 'reader' AND k.revoked_at IS NULL
           AND (k.expires_at IS NULL OR k.expires_at > now())
           AND (k.all_patients OR EXISTS (
                SELECT 1 FROM reader_key_teams t JOIN care_team_patients c USING (team_id)
                 WHERE t.key_id = k.key_id AND c.patient_id = patient)))
$$;
REVOKE ALL ON FUNCTION fhir_key_may_read(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fhir_key_may_read(text, text) TO vitals_sink;

-- The read API registers subscriptions (one INSERT in a read-write transaction, as its
-- alert actions), reads them back and turns them off.
GRANT SELECT, INSERT ON fhir_subscriptions TO vitals_reader;
GRANT UPDATE (status) ON fhir_subscriptions TO vitals_reader;
-- The notifier queues, claims and records; it reads the alerts it sends.
GRANT SELECT, INSERT, UPDATE ON fhir_subscriptions, fhir_notifications TO vitals_sink;
GRANT SELECT ON fhir_dead_letters TO vitals_sink;
GRANT SELECT ON alerts, alert_lifecycle TO vitals_sink;
