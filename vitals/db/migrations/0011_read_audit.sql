-- The read audit: one row per read of a patient's data through the read API, written in
-- batches by each API process (readapi/audit.py). Tamper-evident: every row carries
-- the SHA-256 of the previous row's hash and its own canonical form, chained per writer
-- (one process run); `vitals audit verify` recomputes the chains. Re-appliable.
CREATE TABLE IF NOT EXISTS read_audit (
    writer        text        NOT NULL,  -- the API process run that wrote the chain
    seq           bigint      NOT NULL CHECK (seq >= 1),
    at            timestamptz NOT NULL,
    reader_key_id text        NOT NULL,
    reader        text        NOT NULL,
    route         text        NOT NULL,
    patient_id    text        NOT NULL,
    outcome       text        NOT NULL,
    status        integer     NOT NULL,
    row_count     integer     NOT NULL,
    prev_hash     bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash          bytea       NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (writer, seq)
);
-- "Who read this patient's data" (`vitals audit reads --patient P --from --to`).
CREATE INDEX IF NOT EXISTS read_audit_patient_at ON read_audit (patient_id, at);

-- Append-only for everyone, the owner included, unless a superuser switches the trigger
-- off (which the chain then shows). The API's role may only insert.
CREATE OR REPLACE FUNCTION read_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'read_audit is append-only';
END
$$;
DROP TRIGGER IF EXISTS read_audit_append_only ON read_audit;
CREATE TRIGGER read_audit_append_only BEFORE UPDATE OR DELETE ON read_audit
    FOR EACH ROW EXECUTE FUNCTION read_audit_append_only();
DROP TRIGGER IF EXISTS read_audit_no_truncate ON read_audit;
CREATE TRIGGER read_audit_no_truncate BEFORE TRUNCATE ON read_audit
    FOR EACH STATEMENT EXECUTE FUNCTION read_audit_append_only();

GRANT INSERT ON read_audit TO vitals_reader;
