-- The login role Grafana reads TimescaleDB as: SELECT on what the dashboard shows, nothing
-- else (Grafana runs whatever SQL a dashboard editor types; the gateway's key and audit
-- tables stay out of reach). Run by compose's `grafana-grants` after `db migrate`, with
-- psql variables reader (role), password and db. Idempotent: every run resets the
-- password and grants.
SELECT format('CREATE ROLE %I LOGIN', :'reader')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') \gexec
ALTER ROLE :"reader" LOGIN PASSWORD :'password';
-- A dashboard query must never hold up the sinks, nor write.
ALTER ROLE :"reader" SET statement_timeout = '30s';
ALTER ROLE :"reader" SET default_transaction_read_only = on;
GRANT CONNECT ON DATABASE :"db" TO :"reader";
GRANT USAGE ON SCHEMA public TO :"reader";
-- On TimescaleDB a grant on a continuous aggregate reaches its materialized hypertable.
GRANT SELECT ON readings, readings_1m, readings_1h, alerts TO :"reader";
