//! The second factor's flows: enrollment, its confirmation (with the recovery codes), its removal,
//! and the verification that completes a login challenge with a session. See `crate::mfa`.

use uuid::Uuid;

use super::passkeys::{PasskeyUse, use_passkey};
use super::{NewSession, Opening, open_login};
use crate::clock::Millis;
use crate::failpoint::failpoint;
use crate::mfa::challenge::MAX_FAILURES;
use crate::mfa::passkey::CeremonyKind;
use crate::store::audit::{self, Actor};
use crate::store::rate_limits::{self, Refund};
use crate::store::tx::{Conn, Done};
use crate::store::users::{self, Account};
use crate::store::webhooks::Routes;
use crate::store::{Store, mfa, passkeys, sessions};
use crate::tokens::SignIn;

/// What the second factor of a verification is.
#[derive(Debug, Clone)]
pub enum Proof {
    /// A TOTP code of this step (already checked against the secret).
    Totp { step: i64 },
    /// A recovery code, by its hash.
    RecoveryCode { hash: String },
    /// A passkey's assertion (already checked against the credential read), and its ceremony.
    Passkey(PasskeyUse),
}

/// Everything a verification writes, prepared before the transaction.
#[derive(Debug)]
pub struct NewVerification {
    pub token_hash: String,
    pub user_id: Uuid,
    /// The fingerprint the challenge holds, computed again from the hash the account has now.
    pub credential: String,
    pub proof: Proof,
    pub session: NewSession,
    /// The verification's rate-limit counts to take back: the code was right.
    pub refund: Option<Refund>,
    pub actor: Actor,
    pub now: Millis,
}

#[derive(Debug)]
pub enum Verification {
    Opened(Account),
    /// The challenge was spent, expired or failed out, the password changed, the account was
    /// disabled, or the factor was removed since the code was checked.
    Stale,
    /// The code's step was accepted already, or the recovery code was used: a replay.
    Replayed,
}

impl Store {
    /// Stores a new, unconfirmed TOTP secret; false when the user has a confirmed one.
    pub async fn start_totp(
        &self,
        user_id: Uuid,
        sealed_secret: String,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.write(sealed_secret, move |c, sealed| {
            Box::pin(async move {
                Ok(
                    match mfa::put_pending(&mut *c, user_id, sealed, now).await? {
                        true => Done::Commit(true),
                        false => Done::Rollback(false),
                    },
                )
            })
        })
        .await
    }

    /// Confirms the pending secret that the code was checked against, with the ten recovery
    /// codes and the audit event; false when it is no longer the pending one.
    pub async fn confirm_totp(
        &self,
        user_id: Uuid,
        sealed_secret: String,
        step: i64,
        recovery_hashes: Vec<String>,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        let input = (sealed_secret, recovery_hashes, actor);
        self.write(input, move |c, (sealed, hashes, actor)| {
            Box::pin(async move {
                if !mfa::confirm(&mut *c, user_id, sealed, step, now).await? {
                    return Ok(Done::Rollback(false));
                }
                mfa::replace_recovery_codes(c, user_id, hashes, now).await?;
                // The code proved the authenticator in this session: it counts as signed in
                // with the second factor from now on.
                if let Some(session_id) = actor.session_id {
                    sessions::step_up(&mut *c, session_id, SignIn::PasswordAndOtp).await?;
                }
                audit::record(&mut *c, audit::Kind::MfaEnabled, actor, now).await?;
                failpoint!("mfa.confirm.before_commit");
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Removes the user's second factor (the user, after re-entering the password, or an
    /// operator); whether there was one.
    pub async fn remove_totp(
        &self,
        user_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.write(actor, move |c, actor| {
            Box::pin(async move {
                if !mfa::remove(c, user_id).await? {
                    return Ok(Done::Rollback(false));
                }
                audit::record(&mut *c, audit::Kind::MfaDisabled, actor, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Removes every second factor of the user (an operator, for a user who lost them): the TOTP
    /// secret with its codes and challenges, and the passkeys; whether there was any.
    pub async fn remove_all_factors(
        &self,
        user_id: Uuid,
        actor: Actor,
        now: Millis,
    ) -> Result<bool, sqlx::Error> {
        self.write(actor, move |c, actor| {
            Box::pin(async move {
                let totp = mfa::remove(c, user_id).await?;
                let passkeys = passkeys::remove_all(&mut *c, user_id).await? > 0;
                if !totp && !passkeys {
                    return Ok(Done::Rollback(false));
                }
                audit::record(&mut *c, audit::Kind::MfaDisabled, actor, now).await?;
                Ok(Done::Commit(true))
            })
        })
        .await
    }

    /// Takes back a re-entered password's rate-limit counts: it was right.
    pub async fn refund_attempt(&self, refund: Refund) -> Result<(), sqlx::Error> {
        self.record(refund, |c, refund| {
            Box::pin(async move {
                rate_limits::apply_refund(c, refund).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// A wrong code for a challenge: counted against it, with the audit event, whether or not
    /// anyone waits for the answer.
    pub async fn record_mfa_failure(
        &self,
        token_hash: String,
        actor: Actor,
        now: Millis,
    ) -> Result<(), sqlx::Error> {
        self.record((token_hash, actor), move |c, (hash, actor)| {
            Box::pin(async move {
                mfa::count_failure(&mut *c, hash).await?;
                audit::record(&mut *c, audit::Kind::MfaFailed, actor, now).await?;
                Ok(Done::Commit(()))
            })
        })
        .await
    }

    /// Completes a login challenge: the challenge spent, the code's step (or the recovery code)
    /// used up, the session opened, the last login, the refund and the audit event, in one
    /// transaction, and only while the password is the one the login verified, the account is
    /// enabled and the factor is still there.
    pub async fn verify_mfa(&self, new: NewVerification) -> Result<Verification, sqlx::Error> {
        self.write_evented(new, |c, (new, hooks)| Box::pin(verify(c, new, hooks)))
            .await
    }
}

async fn verify(
    c: &mut Conn,
    new: &NewVerification,
    hooks: &Routes,
) -> Result<Done<Verification>, sqlx::Error> {
    if !mfa::spend_challenge(&mut *c, &new.token_hash, new.now, MAX_FAILURES).await? {
        return Ok(Done::Rollback(Verification::Stale));
    }
    // The account's row, locked: a reset, change or disable racing this waits or wins.
    let Some(current) = users::lock_enabled(&mut *c, new.user_id).await? else {
        return Ok(Done::Rollback(Verification::Stale));
    };
    if crate::mfa::challenge::credential(&current) != new.credential {
        return Ok(Done::Rollback(Verification::Stale));
    }
    if !mfa::has_factor(&mut *c, new.user_id).await? {
        return Ok(Done::Rollback(Verification::Stale));
    }
    let accepted = match &new.proof {
        Proof::Totp { step } => mfa::accept_step(&mut *c, new.user_id, *step).await?,
        Proof::RecoveryCode { hash } => {
            mfa::spend_recovery_code(&mut *c, new.user_id, hash, new.now).await?
        }
        Proof::Passkey(used) => {
            let kind = CeremonyKind::SecondFactor;
            use_passkey(c, used, kind, new.now).await? == Some(true)
        }
    };
    if !accepted {
        return Ok(Done::Rollback(Verification::Replayed));
    }
    if let Some(refund) = &new.refund {
        rate_limits::apply_refund(&mut *c, refund).await?;
    }
    let account = open_login(
        c,
        (hooks, Opening::Login),
        new.user_id,
        &new.session,
        &new.actor,
        new.now,
    )
    .await?;
    failpoint!("mfa.verify.before_commit");
    Ok(Done::Commit(Verification::Opened(account)))
}
