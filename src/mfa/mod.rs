//! The second factor: TOTP (RFC 6238) with recovery codes, and the login challenge.
//!
//! - **Enrollment** (`POST /auth/mfa/totp/enroll`, after re-entering the password) stores a new
//!   secret, sealed with the key-encryption key and bound to the user id, unconfirmed; the answer
//!   carries it as base32, as an `otpauth://` URI and as a QR code (SVG). `confirm` with a first
//!   code turns it on and returns ten recovery codes, shown once and stored hashed.
//! - **A login** of an account with a confirmed secret opens no session: in its transaction it
//!   writes a challenge instead, and answers `mfa_required` with an `mfa_token` (opaque, hashed
//!   under its own purpose: it is no access token, no refresh token, no link). `POST
//!   /auth/mfa/verify` spends it with a code or a recovery code in ONE transaction (the
//!   challenge, the code's step or the recovery code, the session, the last login, the audit
//!   event), and only then mints tokens and sets the cookies with the one cookie code.
//! - **A code is accepted once**: the step of the last accepted code is stored, and the
//!   transaction that accepts one moves it forward only if it is later (`last_step < step`), so
//!   two requests racing with the same code cannot both win. Clock skew of ±1 step (30 s) is
//!   allowed.
//! - **Wrong codes** count as failed logins of the account (the same limits as passwords) and
//!   toward the challenge's own limit (`MAX_FAILURES`), after which its `mfa_token` is dead.

pub mod challenge;
pub mod passkey;
pub mod recovery;
pub mod totp;
