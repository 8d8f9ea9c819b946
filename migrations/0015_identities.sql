-- Sign-in with OpenID Connect providers: which provider account (its `sub`) is which user.
--
-- `provider` is the configured provider's id (`[[oidc_providers]] id`), `subject` the ID token's
-- `sub`: the pair names one account at one provider, and one latchkey user at most (UNIQUE).
-- `email` is the address the provider last said the account has, for the user to recognise it
-- (never used to find a user: only (provider, subject) is).
CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    email TEXT,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT,
    UNIQUE (provider, subject)
);

CREATE INDEX identities_user_id ON identities (user_id);
