-- A second factor: TOTP with recovery codes, and the login challenge an `mfa_token` answers.

-- One TOTP secret per user, sealed with the key-encryption key (like the signing keys, bound to
-- the user id); unconfirmed until a first code proves the authenticator holds it.
CREATE TABLE mfa_totp (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret TEXT NOT NULL,
    confirmed_at BIGINT,
    -- The 30-second step of the last code accepted: each code works once (replays refused).
    last_step BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- Ten per confirmed enrollment, shown once, stored hashed; each works once.
CREATE TABLE mfa_recovery_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
);

-- The challenge of a password login to an account with a second factor: the `mfa_token`'s hash,
-- the account, and a fingerprint of the password hash the login verified (a reset or change
-- before the verification ends the challenge).
CREATE TABLE mfa_challenges (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    failures INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE INDEX mfa_challenges_user_id ON mfa_challenges (user_id);

-- How each session signed in: `pwd`, or `pwd otp` (the access token's `amr`).
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT 'pwd';
