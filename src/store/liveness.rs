//! The liveness cache: what `GET /auth/me` and every authenticated request would otherwise read
//! from the database on each call, kept in memory with the guarantee of that read.
//!
//! Three things are cached, each bounded in number and in age:
//!
//! - **verified access tokens** (the token's text → its user and session), so the EdDSA check is
//!   done once per token rather than once per request. A token never changes; the entry lasts
//!   until the token expires (with the leeway), at most `TOKEN_MAX_AGE`.
//! - **live sessions**, per user: the session was live in the database when read, and the entry
//!   lasts until its idle or absolute expiry as read then, at most `MAX_AGE`.
//! - **the account** `GET /auth/me` answers (its JSON), per user, at most `MAX_AGE`.
//!
//! # The guarantee
//!
//! Everything that ends a session or changes what `/auth/me` shows (a logout, logout-all, a
//! password reset or change, a disable, a deletion, an operator's revoke, a reused refresh token,
//! a profile, email or metadata change, a login's `last_login_at`) goes through a statement
//! function of the store that calls `changed` inside its transaction. That does two things:
//!
//! - **in this process, at once**: the user is noted for the transaction, and the moment the
//!   transaction is over (committed, or not: a miss costs only a read) every entry of that user is
//!   dropped, before the flow's caller gets its outcome. The request that revoked, and every
//!   request that starts after it was answered, sees the database.
//! - **in every other process**: on PostgreSQL a `pg_notify` with the user id, which PostgreSQL
//!   delivers at the commit to every instance's `LISTEN` connection (`watch`); the instance
//!   drops that user's entries as it reads it. While an instance has no listening connection (at
//!   start, once it is lost, until it is back and listening again) it drops the whole cache and
//!   serves every request from the database. On SQLite, where other processes are the CLI (or
//!   another server on the same file), a counter row (`liveness_epoch`) is bumped in the same
//!   transaction and polled every `POLL_EVERY`; a change drops the whole cache, and an entry is
//!   used only within `SQLITE_BOUND` of the start of the last poll that succeeded, so a
//!   revocation committed by another process is honoured within `SQLITE_BOUND` (50 ms).
//!
//! A read that began before an invalidation must not put back what it read: every invalidation
//! bumps a generation, a read takes the generation before its query ([`Liveness::ticket`]) and
//! its result is kept only if no invalidation happened since.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::AnyConnection;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use uuid::Uuid;

use super::{Backend, Store};
use crate::clock::{Millis, millis};

/// The longest a live session or an account is kept without being read again.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// The longest a verified token is kept (it cannot change, but a key ring can).
const TOKEN_MAX_AGE: Duration = Duration::from_secs(60);
/// How many sessions, accounts and tokens are kept (each); past that, arbitrary ones go.
const CAPACITY: usize = 20_000;
/// The PostgreSQL channel of invalidations; the payload is a user id.
pub const CHANNEL: &str = "latchkey_liveness";
/// How often SQLite's counter of changes is read.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// On SQLite, how long after the start of the last successful poll an entry may still be used:
/// the bound within which another process's revocation takes effect here.
pub const SQLITE_BOUND: Duration = Duration::from_millis(50);
/// The pause before listening again after the PostgreSQL connection was lost.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);

/// The cache, shared by the store (which invalidates it) and the extractors (which read it).
pub struct Liveness {
    cache: Mutex<Cache>,
    /// Entries are used only before this instant (microseconds since `epoch`): `u64::MAX` while
    /// PostgreSQL's listener is up, the last poll plus `SQLITE_BOUND` on SQLite, 0 when neither.
    usable_until: AtomicU64,
    epoch: Instant,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    tokens: HashMap<Box<str>, Verified>,
    users: HashMap<Uuid, UserEntry>,
    sessions: usize,
    /// SQLite: the values of `liveness_epoch` this process's committed transactions bumped it
    /// to, not yet seen by the poll.
    own_epochs: Vec<i64>,
}

#[derive(Default)]
struct UserEntry {
    /// Live sessions: until when each may be believed live.
    sessions: HashMap<Uuid, Millis>,
    /// `GET /auth/me`'s body and until when it may be served.
    account: Option<(Bytes, Millis)>,
}

/// A verified access token's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// Until when the token is valid (its `exp` plus the leeway), and kept.
    pub until: Millis,
}

/// What a read takes before its query: the generation it may insert under.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Default for Liveness {
    fn default() -> Liveness {
        Liveness {
            cache: Mutex::new(Cache::default()),
            usable_until: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Liveness {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves maps that are merely incomplete.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether entries may be used now (the channel from other processes is up).
    fn usable(&self) -> bool {
        self.micros() < self.usable_until.load(Ordering::Acquire)
    }

    /// A verified token, if this one was verified before and is still valid at `now`.
    pub fn token(&self, token: &str, now: Millis) -> Option<Verified> {
        let cache = self.lock();
        cache.tokens.get(token).filter(|v| now < v.until).copied()
    }

    /// Keeps a verified token (at most `TOKEN_MAX_AGE`).
    pub fn put_token(&self, token: &str, mut verified: Verified, now: Millis) {
        verified.until = verified.until.min(now + millis(TOKEN_MAX_AGE));
        let mut cache = self.lock();
        if cache.tokens.len() >= CAPACITY {
            evict_one(&mut cache.tokens);
        }
        cache.tokens.insert(token.into(), verified);
    }

    /// Whether the session is known live at `now` (`false`: ask the database).
    pub fn session_live(&self, user_id: Uuid, session_id: Uuid, now: Millis) -> bool {
        if !self.usable() {
            return false;
        }
        let cache = self.lock();
        cache
            .users
            .get(&user_id)
            .and_then(|u| u.sessions.get(&session_id))
            .is_some_and(|until| now < *until)
    }

    /// `GET /auth/me`'s body for the session, if the session is known live and the body known.
    pub fn account(&self, user_id: Uuid, session_id: Uuid, now: Millis) -> Option<Bytes> {
        if !self.usable() {
            return None;
        }
        let cache = self.lock();
        let user = cache.users.get(&user_id)?;
        let live = user.sessions.get(&session_id).is_some_and(|u| now < *u);
        let (body, until) = user.account.as_ref()?;
        (live && now < *until).then(|| body.clone())
    }

    /// The generation before a read of the database, or `None` when nothing may be kept.
    pub fn ticket(&self) -> Option<Ticket> {
        let generation = self.lock().generation;
        self.usable().then_some(Ticket(generation))
    }

    /// Keeps a session read live, until `live_until` (its expiry as read), at most `MAX_AGE`.
    pub fn put_session(
        &self,
        ticket: Ticket,
        user_id: Uuid,
        session_id: Uuid,
        live_until: Millis,
        now: Millis,
    ) {
        self.put(ticket, user_id, session_id, live_until, now, None);
    }

    /// `put_session`, with the body of `GET /auth/me` read in the same query.
    pub fn put_account(
        &self,
        ticket: Ticket,
        (user_id, session_id): (Uuid, Uuid),
        live_until: Millis,
        now: Millis,
        body: Bytes,
    ) {
        self.put(ticket, user_id, session_id, live_until, now, Some(body));
    }

    fn put(
        &self,
        Ticket(generation): Ticket,
        user_id: Uuid,
        session_id: Uuid,
        live_until: Millis,
        now: Millis,
        body: Option<Bytes>,
    ) {
        let until = live_until.min(now + millis(MAX_AGE));
        let mut cache = self.lock();
        if cache.generation != generation {
            return;
        }
        let full = cache.sessions >= CAPACITY || cache.users.len() >= CAPACITY;
        if let Some(user) = cache.users.keys().next().copied().filter(|_| full) {
            cache.remove_user(user);
        }
        let user = cache.users.entry(user_id).or_default();
        let added = user.sessions.insert(session_id, until).is_none();
        if let Some(body) = body {
            user.account = Some((body, until));
        }
        cache.sessions += usize::from(added);
    }

    /// Drops every entry of these users (they changed), and whatever was being read.
    pub fn invalidate(&self, users: &[Uuid]) {
        let mut cache = self.lock();
        cache.generation += 1;
        for user in users {
            cache.remove_user(*user);
        }
    }

    /// Drops every session and account (tokens stay: they cannot be revoked, only their session).
    pub fn clear(&self) {
        let mut cache = self.lock();
        cache.generation += 1;
        cache.users.clear();
        cache.sessions = 0;
    }

    /// Entries may be used from now on: the listener is up (PostgreSQL).
    fn set_listening(&self, up: bool) {
        let until = if up { u64::MAX } else { 0 };
        self.usable_until.store(until, Ordering::Release);
    }

    /// Entries may be used until `SQLITE_BOUND` after `polled_at` (SQLite).
    fn polled(&self, polled_at: u64) {
        let bound = u64::try_from(SQLITE_BOUND.as_micros()).unwrap_or(0);
        self.usable_until
            .store(polled_at.saturating_add(bound), Ordering::Release);
    }
}

impl Cache {
    fn remove_user(&mut self, user_id: Uuid) {
        if let Some(user) = self.users.remove(&user_id) {
            self.sessions -= user.sessions.len();
        }
    }
}

fn evict_one<V>(map: &mut HashMap<Box<str>, V>) {
    if let Some(key) = map.keys().next().cloned() {
        map.remove(&key);
    }
}

/// What one attempt of a flow changed (see `changed`).
#[derive(Default)]
pub(super) struct Changes {
    users: Vec<Uuid>,
    /// SQLite: the value this transaction bumped `liveness_epoch` to.
    epoch: Option<i64>,
    /// Whether the transaction is known committed (then `epoch` is this process's own).
    committed: bool,
}

tokio::task_local! {
    /// The changes of a flow's current attempt, read by `Store::run_flow` after it.
    static CHANGED: RefCell<Changes>;
}

/// Runs a flow's attempts with a record of what they change (see `take_changed`).
pub(super) async fn recording<F: Future>(future: F) -> F::Output {
    CHANGED
        .scope(RefCell::new(Changes::default()), future)
        .await
}

/// What the current attempt changed, emptied for the next one.
pub(super) fn take_changed() -> Changes {
    CHANGED
        .try_with(|changed| std::mem::take(&mut *changed.borrow_mut()))
        .unwrap_or_default()
}

/// Says that the current attempt's transaction committed.
pub(super) fn committed() {
    let _ = CHANGED.try_with(|changed| changed.borrow_mut().committed = true);
}

/// Says, inside a write transaction, that `user_id` changed in a way the cache must not hide:
/// called by every statement function that ends a session or changes an account.
pub(super) async fn changed(c: &mut AnyConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    let first = CHANGED
        .try_with(|changed| {
            let mut changed = changed.borrow_mut();
            let first = changed.users.is_empty();
            if !changed.users.contains(&user_id) {
                changed.users.push(user_id);
            }
            first
        })
        .unwrap_or_else(|_| {
            // Only a flow of `tx.rs` writes; outside one nothing could drop the entries.
            tracing::error!("a change to an account outside a store flow");
            true
        });
    if c.backend_name() == "PostgreSQL" {
        // Delivered by PostgreSQL to every listener at the commit, never before (nor after a
        // rollback); repeated payloads within a transaction are sent once.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(user_id.to_string())
            .execute(&mut *c)
            .await?;
    } else if first {
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE liveness_epoch SET changes = changes + 1 WHERE id = 1 RETURNING changes",
        )
        .fetch_one(&mut *c)
        .await?;
        let _ = CHANGED.try_with(|changed| changed.borrow_mut().epoch = Some(epoch));
    }
    Ok(())
}

impl Liveness {
    /// After an attempt of a flow, whatever its outcome (a commit whose answer was lost may have
    /// happened; after a rollback a dropped entry costs one read): its users leave the cache
    /// before anyone hears of the outcome, and a committed bump of SQLite's epoch is noted as
    /// this process's own, so the poll does not drop the whole cache for it.
    pub(super) fn after_attempt(&self, changes: Changes) {
        if changes.users.is_empty() {
            return;
        }
        let mut cache = self.lock();
        cache.generation += 1;
        for user in &changes.users {
            cache.remove_user(*user);
        }
        if let (Some(epoch), true) = (changes.epoch, changes.committed) {
            if cache.own_epochs.len() >= CAPACITY {
                // No poll is taking them (no background work): the next poll, if any, clears.
                cache.own_epochs.clear();
            }
            cache.own_epochs.push(epoch);
        }
    }

    /// The poll read `changes` after `seen`: whether another process changed something (every
    /// bump between them that is not this process's own).
    fn foreign_changes(&self, seen: i64, changes: i64) -> bool {
        let mut cache = self.lock();
        let own = &cache.own_epochs;
        let foreign = changes < seen
            || changes - seen > i64::try_from(own.len()).unwrap_or(i64::MAX)
            || (seen + 1..=changes).any(|e| !own.contains(&e));
        cache.own_epochs.retain(|e| *e > changes);
        foreign
    }
}

/// Keeps the cache honest against other processes until `stopping`: PostgreSQL's `LISTEN`, or
/// SQLite's poll (see the module docs). `database_url` is where to listen (PostgreSQL).
pub fn watch(
    store: &Store,
    database_url: SecretString,
    mut stopping: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    tokio::spawn(async move {
        let work = async {
            match store.backend {
                Backend::Postgres => listen(&store.liveness, database_url.expose_secret()).await,
                Backend::Sqlite => poll(&store).await,
            }
        };
        tokio::select! {
            () = work => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
        store.liveness.set_listening(false);
        store.liveness.clear();
    })
}

async fn listen(liveness: &Liveness, url: &str) {
    if !url.starts_with("postgres") {
        // Library mode on the application's PostgreSQL pool without its URL in `database_url`:
        // nothing to listen with, so nothing is cached.
        tracing::warn!(
            "database_url is not the PostgreSQL database of the pool: the liveness cache stays off"
        );
        return;
    }
    loop {
        match listening(url).await {
            Ok(mut listener) => {
                // Whatever was missed while not listening is forgotten before anything is kept.
                liveness.clear();
                liveness.set_listening(true);
                // Until the connection is lost (`None`) or fails.
                while let Ok(Some(note)) = listener.try_recv().await {
                    match note.payload().parse::<Uuid>() {
                        Ok(user) => liveness.invalidate(&[user]),
                        Err(_) => liveness.clear(),
                    }
                }
                liveness.set_listening(false);
                liveness.clear();
                tracing::warn!("the liveness listener lost its connection: cache off until back");
            }
            Err(err) => tracing::warn!(error = %err, "the liveness listener cannot listen"),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn listening(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn poll(store: &Store) {
    let liveness = &store.liveness;
    let mut seen: Option<i64> = None;
    let mut every = tokio::time::interval(POLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let started = liveness.micros();
        let read: Result<i64, sqlx::Error> =
            sqlx::query_scalar("SELECT changes FROM liveness_epoch WHERE id = 1")
                .fetch_one(store.reader())
                .await;
        match read {
            Ok(changes) => {
                let foreign = match seen {
                    None => true,
                    Some(seen) => liveness.foreign_changes(seen, changes),
                };
                if foreign {
                    liveness.clear();
                }
                seen = Some(changes);
                liveness.polled(started);
            }
            Err(err) => {
                liveness.clear();
                seen = None;
                tracing::warn!(error = %err, "reading the liveness epoch failed");
            }
        }
    }
}

/// For tests: whether entries are in use now.
#[doc(hidden)]
pub fn is_usable(store: &Store) -> bool {
    store.liveness.usable()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Liveness {
        let liveness = Liveness::default();
        liveness.set_listening(true);
        liveness
    }

    #[test]
    fn a_read_that_began_before_an_invalidation_keeps_nothing() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let liveness = live();
        let ticket = liveness.ticket().unwrap();
        liveness.invalidate(&[Uuid::new_v4()]);
        liveness.put_session(ticket, user, session, 10_000, 0);
        assert!(!liveness.session_live(user, session, 1));
        let ticket = liveness.ticket().unwrap();
        liveness.put_session(ticket, user, session, 10_000, 0);
        assert!(liveness.session_live(user, session, 1));
        assert!(!liveness.session_live(user, session, 10_000), "expired");
        liveness.invalidate(&[user]);
        assert!(!liveness.session_live(user, session, 1));
    }

    #[test]
    fn nothing_is_used_or_kept_while_the_channel_is_down() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let liveness = live();
        let ticket = liveness.ticket().unwrap();
        liveness.put_account(ticket, (user, session), 10_000, 0, Bytes::from("{}"));
        assert!(liveness.account(user, session, 1).is_some());
        liveness.set_listening(false);
        assert!(liveness.account(user, session, 1).is_none());
        assert!(liveness.ticket().is_none());
        liveness.set_listening(true);
        assert!(liveness.account(user, session, 1).is_some());
        assert!(
            liveness.account(user, Uuid::new_v4(), 1).is_none(),
            "another session"
        );
        assert!(
            liveness.account(user, session, millis(MAX_AGE)).is_none(),
            "at most MAX_AGE"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let liveness = live();
        for _ in 0..CAPACITY + 10 {
            let ticket = liveness.ticket().unwrap();
            liveness.put_session(ticket, Uuid::new_v4(), Uuid::new_v4(), 10_000, 0);
        }
        let cache = liveness.lock();
        assert!(cache.sessions <= CAPACITY);
        assert_eq!(
            cache.sessions,
            cache
                .users
                .values()
                .map(|u| u.sessions.len())
                .sum::<usize>()
        );
    }
}
