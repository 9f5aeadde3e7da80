-- Chunk interval: one day, stated here on purpose (0001 already created the hypertable
-- with it; this changes nothing on a fresh database and affects only chunks created
-- afterwards on an old one). Why one day:
--   * the newest chunk and its primary-key index take every insert and should stay in
--     memory (TimescaleDB's rule of thumb: recent chunks within ~25 % of RAM). A reading
--     costs ~225 bytes with its key (measured on PostgreSQL 15); 10,000 patients sending
--     ~2,000 readings a day each make ~4.5 GB a day: a day fits a 16-32 GB server, the
--     default week (~31 GB) would not.
--   * gateways upload backlogs hours late; with daily chunks those land in today's or
--     yesterday's chunk, still uncompressed (compression starts after 7 days, 0001).
--   * retention drops whole chunks: one-day granularity, and 365 chunks for a year of
--     data, which the planner excludes cheaply by time range (hourly chunks would be 8,760).
SELECT set_chunk_time_interval('readings', INTERVAL '1 day');

-- Raw readings are kept for 365 days, then their chunks are dropped whole (no DELETE, no
-- bloat). The per-minute and per-hour aggregates (0004) keep their rows: dropping raw
-- chunks does not touch them, and their refresh windows (7 and 30 days) never reach back
-- to chunks this policy drops, so a refresh never recomputes a bucket from missing data.
-- This is the default a fresh database gets; an operator changes it on a live database
-- with alter_job (docs/storage.md). if_not_exists keeps a re-run from failing, and it
-- never overwrites an operator's later change, since this file is applied once.
SELECT add_retention_policy('readings', drop_after => INTERVAL '365 days',
                            if_not_exists => TRUE);
