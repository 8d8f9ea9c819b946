-- Rate-limit counters, shared by every instance on this database (see src/limits.rs).
-- Same rules as 0001: BIGINT milliseconds since the epoch, nothing only one database understands.
--
-- One row per counter. `key` is the limit's name and a keyed hash of its subject (a client IP or
-- a normalized email address), so the table holds no addresses in the clear.
-- Fixed-window counters: `count` hits since `window_start`; the window ends at `expires_at`.
-- Per-account failed logins: `count` failures, and `blocked_until` the end of the wait the next
-- attempt must respect; the row is forgotten at `expires_at`, a quiet period after the last
-- failure or the end of the last wait.
CREATE TABLE rate_limits (
    key           TEXT PRIMARY KEY NOT NULL,
    window_start  BIGINT NOT NULL,
    count         BIGINT NOT NULL,
    blocked_until BIGINT NOT NULL DEFAULT 0,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX rate_limits_expires_at_idx ON rate_limits (expires_at);
