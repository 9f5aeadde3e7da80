-- Suppressed repeats (processors/episodes.py, docs/detectors.md): an episode that repeats
-- the same rule for the same patient within the rule's suppress_s of the last one's
-- resolution is recorded here with suppressed = true and never published on vitals.alerts
-- (not paged; the read API and the record still show it). Existing rows were all paged.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS suppressed boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN alerts.suppressed IS
    'a repeat within the rule''s suppression window: recorded, never published';

-- Open work for the publisher: suppressed rows are never published, so they are not work.
DROP INDEX IF EXISTS alerts_unpublished;
CREATE INDEX alerts_unpublished ON alerts (detected_at)
    WHERE published_at IS NULL AND NOT suppressed;
