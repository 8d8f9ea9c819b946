-- Account lifecycle and the admin API (issue 15). Same rules as 0001: UUID text ids, BIGINT
-- milliseconds since the epoch, nothing that only one of SQLite and PostgreSQL understands.

-- Admin API keys, created and revoked by the CLI. The key itself (`lk_admin_<id>_<secret>`) is
-- shown once; only the SHA-256 of it is stored (a 256-bit random secret needs no slow hash), and
-- the request's key is compared with it in constant time after the row is found by `id`.
CREATE TABLE admin_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Every admin write is an audit event naming the key that made it. No foreign key: audit events
-- outlive what they mention, a revoked key included.
ALTER TABLE audit_events ADD COLUMN admin_key_id TEXT;
-- The admin API's audit query by type, newest first (ids are UUIDv7: time-ordered).
CREATE INDEX audit_events_kind_idx ON audit_events (kind, id);

-- An email change's link proves the new address; `new_email` is that address as the user typed
-- it (the swap stores it as given, like signup). NULL for every other purpose.
ALTER TABLE one_time_tokens ADD COLUMN new_email TEXT;
