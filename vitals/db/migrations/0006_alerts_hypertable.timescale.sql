-- TimescaleDB: alerts, converted in place into a hypertable on episode_start (0006's key
-- contains it). migrate_data moves the rows already stored into chunks, inside this
-- migration's transaction (alerts are few: seconds, not a maintenance window).
--
-- Chunks of 30 days. Alerts are a few rows per episode: 10,000 patients with a few episodes
-- a day each make tens of thousands of rows a day, a few MB, so a day or a week per chunk
-- would make many tiny chunks (each has its own tables and indexes, and the planner looks
-- at every one a query cannot exclude). A month keeps a chunk in the tens to hundreds of MB,
-- twelve chunks a year, and a patient's recent alerts (the console, the read API) in the
-- newest one or two. The time is the episode's start, not the state change: an episode's
-- opened and resolved rows stay in one chunk, and a resolution days later lands in the
-- chunk of its opening.
SELECT create_hypertable(
    'alerts',
    by_range('episode_start', INTERVAL '30 days'),
    if_not_exists => TRUE,
    migrate_data  => TRUE
);
SELECT set_chunk_time_interval('alerts', INTERVAL '30 days');

-- Compression: one segment per patient (a patient's alerts are what is read), newest
-- first. Chunks are compressed 90 days after their end: by then every episode that started
-- in them is resolved and published, long episodes included (device silence for weeks);
-- a later resolution or the publisher's UPDATE of published_at still works on a
-- compressed chunk, only slower.
ALTER TABLE alerts SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'patient_id',
    timescaledb.compress_orderby   = 'episode_start DESC, alert_id, state'
);
SELECT add_compression_policy('alerts', compress_after => INTERVAL '90 days',
                              if_not_exists => TRUE);

-- No retention policy: alerts are clinical records, kept until an operator decides
-- otherwise (docs/storage.md).
