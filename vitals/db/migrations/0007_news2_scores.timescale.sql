-- TimescaleDB: news2_scores is a hypertable on the score's time.
--
-- Chunks of 7 days. A score is stored only when it changes: a few hundred rows a day per
-- patient at most (a fraction of their readings), about 300 bytes each with the parameters:
-- 10,000 patients make well under 1 GB a day, so a week's chunk stays within the memory
-- the newest chunk should have, while one-day chunks would make seven times as many small
-- ones. Scores arrive close to real time (late data is re-scored within the processor's
-- allowed lateness, hours), so only the newest chunk takes writes.
SELECT create_hypertable(
    'news2_scores',
    by_range('t', INTERVAL '7 days'),
    if_not_exists => TRUE,
    migrate_data  => TRUE
);

-- Compression: one segment per patient, newest first, as the read API pages a history
-- and looks up the latest score. Chunks are compressed 7 days after their end.
ALTER TABLE news2_scores SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'patient_id',
    timescaledb.compress_orderby   = 't DESC'
);
SELECT add_compression_policy('news2_scores', compress_after => INTERVAL '7 days',
                              if_not_exists => TRUE);

-- Retention like raw readings (365 days, 0003): a score is derived from readings and kept
-- as long as the readings that justify it; the clinically acted-on outcome, the NEWS2
-- alerts, are kept without limit in alerts. Change it with alter_job (docs/storage.md).
SELECT add_retention_policy('news2_scores', drop_after => INTERVAL '365 days',
                            if_not_exists => TRUE);
