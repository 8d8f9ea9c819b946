-- Password reset, email verification and the transactional outbox that delivers their emails.
-- Same rules as 0001: UUID text ids, BIGINT milliseconds since the epoch, nothing that only one
-- of SQLite and PostgreSQL understands.

-- One-time tokens (reset, verification), by hash only: the token itself exists in the email and,
-- until that email has been delivered, in its outbox row. The hash is domain-separated by purpose
-- (see `tokens::Purpose`), and `purpose` is checked again on every lookup.
CREATE TABLE one_time_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    purpose    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The normalized address the link was sent to: a verification token verifies that address only.
    email      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    -- Set when a newer token, a reset or a password change made this one worthless.
    revoked_at BIGINT
);
CREATE INDEX one_time_tokens_user_idx ON one_time_tokens (user_id, purpose);

-- The outbox: every email a flow sends is a row written in the flow's transaction, delivered by a
-- worker after the commit. A row is claimed by one worker at a time (`claim_id`, `claimed_until`),
-- is sent at most once as far as the database can tell (`sent_at`), and goes dead after a bounded
-- number of attempts. The bodies are erased once the row is sent or dead: they carry the link.
CREATE TABLE outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body_text       TEXT NOT NULL,
    body_html       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claim_id        TEXT,
    claimed_until   BIGINT,
    sent_at         BIGINT,
    dead_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE sent_at IS NULL AND dead_at IS NULL;

-- The per-address mail throttle: when the last reset or verification email to an address was
-- accepted for sending. One row per address, claimed by a conditional upsert, so the limit holds
-- across instances.
CREATE TABLE mail_throttle (
    email        TEXT PRIMARY KEY NOT NULL,
    last_sent_at BIGINT NOT NULL
);
