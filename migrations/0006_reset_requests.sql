-- Password reset requests waiting for the mail worker. A request writes one of these whether or
-- not the address has an account, so its answer time tells nothing; the worker looks the address
-- up and, for an account, issues the link and its email in a transaction of its own.
CREATE TABLE password_reset_requests (
    id          TEXT PRIMARY KEY NOT NULL,
    email       TEXT NOT NULL,
    ip          TEXT,
    user_agent  TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX password_reset_requests_created_at ON password_reset_requests (created_at);
