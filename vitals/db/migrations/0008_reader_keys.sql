-- Reader keys: the read API's credentials, issued, hashed and revoked like gateway keys
-- (`vitals readers issue|revoke|list`), in the same table with their own kind, so a key of
-- one kind never opens another kind's door.
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_kind_check;
ALTER TABLE api_keys
    ADD CONSTRAINT api_keys_kind_check CHECK (kind IN ('gateway', 'admin', 'reader'));

COMMENT ON TABLE api_keys IS
    'Gateway keys, admin tokens and reader keys, as SHA-256 digests; two live keys per principal during rotation.';

-- What the read API loads: reader keys only. A view (run with its owner's rights) rather
-- than SELECT on api_keys, so the API's role never sees gateway or admin key digests.
CREATE OR REPLACE VIEW reader_keys AS
    SELECT key_id, principal, key_sha256, expires_at, revoked_at
      FROM api_keys
     WHERE kind = 'reader';

GRANT SELECT ON reader_keys TO vitals_reader;
