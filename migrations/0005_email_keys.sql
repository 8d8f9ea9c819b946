-- The version of the rules `users.email_normalized` was computed with (see src/domain/email.rs
-- and src/store/email_keys.rs). SQL cannot compute NFKC or IDNA, so the re-key to a new version
-- runs in Rust right after the migrations; this one row says whether it still has work to do.
-- Version 1: the first rules (trimmed, lowercased). The row only reaches the current version once
-- every stored key matches it: until then each start re-checks and reports what it left alone.
CREATE TABLE email_key_version (
    id         BIGINT PRIMARY KEY NOT NULL,
    version    BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    CONSTRAINT email_key_version_one_row CHECK (id = 1)
);
INSERT INTO email_key_version (id, version, checked_at) VALUES (1, 1, 0);
