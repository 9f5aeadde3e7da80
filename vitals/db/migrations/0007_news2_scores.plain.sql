-- Plain PostgreSQL: the primary key (patient_id, t) serves every read (latest score, a
-- patient's history). A BRIN index on t serves ranges over all patients (a cohort's
-- scores over a period, manual retention deletes), as for readings.
CREATE INDEX IF NOT EXISTS news2_scores_t_brin ON news2_scores USING brin (t);
