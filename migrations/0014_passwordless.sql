-- Passwordless sign-in: the one-time link and 6-digit code of one emailed request.
--
-- `token_hash` is the link's token hashed under its own purpose (`tokens::Purpose::Passwordless`),
-- so no reset, verification or refresh token is ever found here, nor one of these elsewhere.
-- `code_hash` is a keyed hash of the code bound to the row's `token_hash`: a code is only worth
-- something together with the address it was sent to. Each code tried counts in `attempts`
-- (before it is compared); after `passwordless::MAX_ATTEMPTS` the row, link included, is dead.
-- A newer request for an address replaces its unused row: an address has one live code at most.
--
-- `user_id` is NULL for an address without an account when accounts are created on first use
-- (`passwordless_signup`): the row then holds the address as typed, to create the account with.
CREATE TABLE passwordless_codes (
    token_hash       TEXT PRIMARY KEY NOT NULL,
    code_hash        TEXT NOT NULL,
    email_normalized TEXT NOT NULL,
    email            TEXT NOT NULL,
    user_id          TEXT REFERENCES users (id) ON DELETE CASCADE,
    attempts         INTEGER NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    used_at          BIGINT
);
CREATE INDEX passwordless_codes_email ON passwordless_codes (email_normalized);
CREATE INDEX passwordless_codes_user ON passwordless_codes (user_id);

-- A passwordless request waits for the mail worker like a reset request (the same answer and the
-- same work for every address); `kind` tells the two apart.
ALTER TABLE password_reset_requests ADD COLUMN kind TEXT NOT NULL DEFAULT 'password_reset';

-- The factor a second-factor challenge follows (`tokens::SignIn::as_str`): `pwd` after a password,
-- `otp` after a passwordless code, so the session it opens says how it signed in.
ALTER TABLE mfa_challenges ADD COLUMN first_factor TEXT NOT NULL DEFAULT 'pwd';
