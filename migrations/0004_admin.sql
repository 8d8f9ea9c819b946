-- Accounts an operator has disabled: they cannot log in, and their sessions were revoked when
-- they were disabled. NULL: enabled.
ALTER TABLE users ADD COLUMN disabled_at BIGINT;
