-- Gateway security: API keys (stored only as hashes), the device registry with its
-- patient bindings over time, the audit trail, and least-privilege roles per process.

-- One row per issued key. Only the SHA-256 of the key is kept: keys are 256-bit random
-- strings, so a fast hash is enough (nothing to brute-force, unlike a password) and the
-- gateway can look a key up by its digest without a slow KDF per request.
-- kind keeps gateway keys and admin tokens apart: a gateway key never opens the admin API.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     text        PRIMARY KEY,
    kind       text        NOT NULL CHECK (kind IN ('gateway', 'admin')),
    principal  text        NOT NULL,
    key_sha256 bytea       NOT NULL UNIQUE CHECK (octet_length(key_sha256) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_principal ON api_keys (kind, principal);

COMMENT ON TABLE api_keys IS
    'Gateway keys and admin tokens, as SHA-256 digests; two live keys per principal during rotation.';

CREATE TABLE IF NOT EXISTS devices (
    device_id     text        PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now()
);

-- Which patient wears the device, from when. A move closes the open binding and opens a
-- new one at the same instant; readings keep the patient of the binding their time is in.
CREATE TABLE IF NOT EXISTS device_patients (
    device_id  text        NOT NULL REFERENCES devices ON DELETE CASCADE,
    patient_id text        NOT NULL,
    valid_from timestamptz NOT NULL,
    valid_to   timestamptz,
    PRIMARY KEY (device_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
-- At most one open binding per device.
CREATE UNIQUE INDEX IF NOT EXISTS device_patients_open ON device_patients (device_id) WHERE valid_to IS NULL;

-- The gateways allowed to upload for a device.
CREATE TABLE IF NOT EXISTS device_gateways (
    device_id  text        NOT NULL REFERENCES devices ON DELETE CASCADE,
    gateway_id text        NOT NULL,
    bound_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, gateway_id)
);

-- One row per upload and per admin action: who, when, what happened, counts. Never the
-- readings, nor patient or device identifiers of uploads.
CREATE TABLE IF NOT EXISTS audit_log (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL,
    actor_kind text        NOT NULL CHECK (actor_kind IN ('gateway', 'admin', 'cli')),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    outcome    text        NOT NULL,
    status     integer,
    upload_id  text,
    accepted   integer,
    rejected   integer,
    detail     jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_kind, actor, at);

-- Least-privilege roles, one per process. NOLOGIN group roles: an operator grants one to
-- each service's login role (GRANT vitals_sink TO sink_login). Roles are cluster-wide, so
-- they are created once; the grants are per database and repeated for every database.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['vitals_gateway', 'vitals_sink', 'vitals_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's migration created it a moment ago
            END;
        END IF;
    END LOOP;
END
$$;

-- The gateway reads keys and the registry, appends audit records, and changes the
-- registry only through the admin API.
GRANT SELECT ON api_keys, devices, device_patients, device_gateways TO vitals_gateway;
GRANT INSERT, UPDATE ON devices, device_patients, device_gateways TO vitals_gateway;
GRANT INSERT ON audit_log TO vitals_gateway;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO vitals_gateway;

-- The sinks write readings and alerts (COPY into a temporary staging table needs TEMP).
GRANT SELECT, INSERT ON readings TO vitals_sink;
GRANT SELECT, INSERT, UPDATE ON alerts TO vitals_sink;

-- The read API and dashboards only read the clinical data.
GRANT SELECT ON readings, alerts, readings_1m, readings_1h TO vitals_reader;
