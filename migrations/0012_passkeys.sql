-- Passkeys (WebAuthn): the credentials a user registered, and the ceremonies in flight.

-- One row per registered credential. `credential_id` is the authenticator's id (base64url), unique
-- across all users (an authenticator's id names one credential); `passkey` is the verifier's
-- record of it (public key, counter, flags; webauthn-rs' `Passkey` as JSON): no secret.
CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    passkey TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);

CREATE INDEX passkeys_user_id ON passkeys (user_id);

-- A registration or an authentication between its start and its finish: the challenge's state,
-- kept here (never with the client) and spent by the finish, so an answer works once. Found by
-- the hash of the opaque `ceremony` handle given to the client. `user_id` is the registering
-- user, or the account of the login challenge a second-factor ceremony answers (`mfa_token_hash`);
-- NULL for a passwordless login, whose user the credential names.
CREATE TABLE passkey_ceremonies (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    mfa_token_hash TEXT,
    state TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX passkey_ceremonies_expires_at ON passkey_ceremonies (expires_at);
