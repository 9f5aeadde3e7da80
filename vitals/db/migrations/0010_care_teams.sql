-- Care teams: who may read which patient through the read API (docs/security.md).
-- A patient is assigned to care teams; a reader key is issued for teams, or explicitly
-- for every patient (a research or integration service). Re-appliable as a whole.

CREATE TABLE IF NOT EXISTS care_teams (
    team_id    text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS care_team_patients (
    team_id     text        NOT NULL REFERENCES care_teams ON DELETE CASCADE,
    patient_id  text        NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, patient_id)
);

-- A key's scope. A reader key with neither teams nor all_patients reads no patient: keys
-- issued before this migration are such keys (fail closed; issue them again with a scope).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS all_patients boolean NOT NULL DEFAULT false;

CREATE TABLE IF NOT EXISTS reader_key_teams (
    key_id  text NOT NULL REFERENCES api_keys ON DELETE CASCADE,
    team_id text NOT NULL REFERENCES care_teams ON DELETE CASCADE,
    PRIMARY KEY (key_id, team_id)
);

-- The read API loads each reader key (the view reader_keys, 0008) with its scope. A view
-- of its own rather than new columns of reader_keys: 0008 re-applied after this one would
-- then try to drop them.
CREATE OR REPLACE VIEW reader_key_scopes AS
    SELECT k.key_id, k.all_patients,
           coalesce((SELECT array_agg(t.team_id ORDER BY t.team_id) FROM reader_key_teams t
                      WHERE t.key_id = k.key_id), '{}') AS teams
      FROM api_keys k
     WHERE k.kind = 'reader';
GRANT SELECT ON reader_key_scopes TO vitals_reader;

-- The read API holds the assignments in memory (reloaded with the reader keys) to answer
-- "may this key read this patient" without a query per request.
GRANT SELECT ON care_team_patients TO vitals_reader;
-- The admin API (served by the gateway) adds teams and assigns patients.
GRANT SELECT, INSERT ON care_teams TO vitals_gateway;
GRANT SELECT, INSERT, DELETE ON care_team_patients TO vitals_gateway;
