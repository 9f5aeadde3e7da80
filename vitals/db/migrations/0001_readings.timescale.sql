-- TimescaleDB 2.x: readings becomes a hypertable partitioned by event time.
-- migrate_data lets a database first migrated without TimescaleDB switch over later
-- (it rewrites existing rows into chunks: slow on a big table, plan a window for it).
SELECT create_hypertable(
    'readings',
    by_range('t', INTERVAL '1 day'),
    if_not_exists => TRUE,
    migrate_data  => TRUE
);

-- Compression: one segment per patient and metric, so reading one series touches one
-- compressed batch per chunk; newest first inside a segment, as dashboards read.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'patient_id, metric',
    timescaledb.compress_orderby   = 't DESC, device_id'
);

-- Chunks older than a week are compressed in the background. Late uploads into a
-- compressed chunk still work (INSERT ... ON CONFLICT DO NOTHING is supported on
-- compressed chunks), only slower.
SELECT add_compression_policy('readings', compress_after => INTERVAL '7 days',
                              if_not_exists => TRUE);

-- Retention and continuous aggregates (per minute, per hour) come as later numbered
-- companions (NNNN_name.timescale.sql), each with its plain counterpart where one makes
-- sense. A continuous aggregate must be created WITH NO DATA to run inside the
-- migration's transaction; its refresh policy then fills it.
