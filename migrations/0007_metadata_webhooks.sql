-- Profile metadata, app metadata and the webhook outbox (issue 12). Same rules as 0001: UUID text
-- ids, BIGINT milliseconds since the epoch, nothing that only one of SQLite and PostgreSQL
-- understands. JSON is stored as TEXT: both read it back as a string, and the application
-- validates it before it is written.

-- `profile.metadata`: the user's own fields, validated against the operator's schema.
ALTER TABLE profiles ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
-- `user.app_metadata`: readable by the user, written only by the operator (admin CLI / API).
ALTER TABLE users ADD COLUMN app_metadata TEXT NOT NULL DEFAULT '{}';

-- Webhook deliveries: one row per event and endpoint, written in the transaction of the flow
-- that caused the event (like the emails of `outbox`), delivered by the webhook worker after the
-- commit. `event_id` is the `webhook-id` header, the same for every endpoint and every attempt;
-- `payload` is the exact body sent. The lease columns are the outbox's and work the same way
-- (see `store::lease`): claimed by one worker at a time, sent once as far as the database can
-- tell, dead after the configured attempts. Secrets are never stored: the worker signs with the
-- configured secret of `endpoint`.
CREATE TABLE webhook_outbox (
    id              TEXT PRIMARY KEY NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    endpoint        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    claim_id        TEXT,
    claimed_until   BIGINT,
    sent_at         BIGINT,
    dead_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at)
    WHERE sent_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_outbox_event_idx ON webhook_outbox (event_id);
