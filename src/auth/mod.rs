//! Who may connect to `seglog serve`, and what they may do: TLS on both
//! listeners, the users file, password checks for Kafka's SASL (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) and HTTP basic auth, and the topic
//! prefixes each user may read or write. It knows nothing of either
//! protocol's bytes: the front ends ask it questions and map its answers
//! to their own errors.
//!
//! # Layout
//! - [`tls`]: the certificate and key (PEM) as a rustls server config.
//! - [`scram`]: SCRAM credentials and the server's side of an exchange.
//! - [`users`]: the users file, read and written atomically.
//! - [`access`]: what a user may do with a topic.
//! - [`command`]: `seglog users add|remove|list`.
//! - this file: [`Authenticator`], the users as `serve` holds them.

pub mod access;
pub mod command;
pub mod scram;
pub mod tls;
pub mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use scram::{Credential, Mechanism};
use users::{User, Users};

pub use access::Access;

/// Passwords salted again at once (PLAIN and HTTP basic auth; a SCRAM
/// client salts its own). Each takes a core for about a millisecond, so a
/// flood of wrong passwords, which no cache answers, costs at most this
/// many cores: the rest wait their turn, and the log's own work goes on.
/// A password that was checked before is answered from its fingerprint
/// without waiting.
pub const PASSWORD_CHECKS_AT_ONCE: usize = 2;

/// Checks waiting for a turn at most; one more is refused at once
/// ([`ChecksBusy`]) rather than queued, so a flood cannot grow the line,
/// and the connections and tasks waiting in it, without bound. At about
/// a millisecond a check, the last in line waits some 30 ms.
pub const PASSWORD_CHECKS_WAITING_MAX: usize = 64;

/// The longest a check waits for its turn before it is refused
/// ([`ChecksBusy`]): a client that has long given up should not be
/// salted for, and a real one is better told to retry.
pub const PASSWORD_CHECK_WAIT_MAX: Duration = Duration::from_secs(5);

/// How long a wrong HTTP password's 401 waits: Kafka's default
/// `connection.failed.authentication.delay.ms`, which the Kafka listener
/// applies too. It slows one connection's guesses; guesses over many
/// connections are bounded by [`PASSWORD_CHECKS_AT_ONCE`].
pub const FAILED_PASSWORD_DELAY: Duration = Duration::from_millis(100);

/// The users `serve` was started with, and what checking their passwords
/// needs. Loaded once at start: a change to the file takes a restart.
pub struct Authenticator {
    users: HashMap<String, Arc<User>>,
    /// A key drawn at start, never stored: it makes the decoy credentials
    /// of unknown users, and the fingerprints of verified passwords.
    secret: [u8; 32],
    /// Per user, a fingerprint (HMAC under `secret`) of the last password
    /// that matched: HTTP basic auth sends the password with every request,
    /// and salting it again each time (4096 rounds of PBKDF2, about a
    /// millisecond) would cost more than most requests. Bounded by the
    /// number of users.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// [`PASSWORD_CHECKS_AT_ONCE`] permits to salt a password, each held
    /// by the blocking job that salts, so a check whose caller went away
    /// still holds its permit until its salting ends.
    checks: Arc<Semaphore>,
    /// Checks waiting for a permit now (at most
    /// [`PASSWORD_CHECKS_WAITING_MAX`]).
    waiting: AtomicUsize,
    /// Rounds of the decoy credential of an unknown user: the most any user
    /// has, so an unknown name costs what a known one does.
    decoy_iterations: u32,
    /// Passwords being salted now, and the most ever at once: what the
    /// tests see the limit by.
    salting: Arc<AtomicUsize>,
    salting_most: Arc<AtomicUsize>,
}

/// A password check refused because too many wait for a turn already
/// ([`PASSWORD_CHECKS_WAITING_MAX`], [`PASSWORD_CHECK_WAIT_MAX`]): the
/// client should retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksBusy;

impl std::fmt::Display for ChecksBusy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "too many password checks at once; retry")
    }
}

/// Counts a waiting check while it lives, so a check whose caller went
/// away leaves the line.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a salting blocking job while it lives.
struct Salting(Arc<AtomicUsize>);

impl Salting {
    fn start(now: &Arc<AtomicUsize>, most: &AtomicUsize) -> Salting {
        let count = now.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(count, Ordering::SeqCst);
        Salting(Arc::clone(now))
    }
}

impl Drop for Salting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Authenticator {
    pub fn new(users: Users) -> Result<Authenticator, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("cannot draw a random key: {e}"))?;
        let decoy_iterations = users
            .iter()
            .flat_map(|u| {
                [
                    u.credential(Mechanism::Sha256).iterations,
                    u.credential(Mechanism::Sha512).iterations,
                ]
            })
            .max()
            .unwrap_or(scram::ITERATIONS_MIN);
        Ok(Authenticator {
            users: users
                .iter()
                .map(|u| (u.name.clone(), Arc::new(u.clone())))
                .collect(),
            secret,
            verified: Mutex::new(HashMap::new()),
            checks: Arc::new(Semaphore::new(PASSWORD_CHECKS_AT_ONCE)),
            waiting: AtomicUsize::new(0),
            decoy_iterations,
            salting: Arc::default(),
            salting_most: Arc::default(),
        })
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    /// A user's SCRAM credential, for an exchange.
    pub fn credential(&self, mechanism: Mechanism, name: &str) -> Option<Credential> {
        self.users
            .get(name)
            .map(|u| u.credential(mechanism).clone())
    }

    /// The credential an exchange uses for a user that does not exist:
    /// salt and keys derived from the mechanism and the name under
    /// `Authenticator::secret`, so the same name gets the same salt at
    /// every attempt, a different one per mechanism as a real user has, and
    /// the exchange looks like one of a real user until the proof fails.
    pub fn decoy(&self, mechanism: Mechanism, name: &str) -> Credential {
        let derive = |label: &[u8], bytes: usize| {
            let mut out = Vec::new();
            let mut counter = 0u8;
            while out.len() < bytes {
                out.extend(self.mac(&[
                    label,
                    &[counter],
                    mechanism.name().as_bytes(),
                    b"\0",
                    name.as_bytes(),
                ]));
                counter += 1;
            }
            out.truncate(bytes);
            out
        };
        let keys = mechanism.key_bytes();
        Credential {
            salt: derive(b"salt", scram::SALT_BYTES),
            iterations: self.decoy_iterations,
            stored_key: derive(b"stored", keys),
            server_key: derive(b"server", keys),
        }
    }

    /// The user whose name and password these are (SASL/PLAIN, HTTP basic
    /// auth), or `None`. An unknown user costs the same work as a wrong
    /// password, so the time taken does not tell names apart. Salts the
    /// password: only [`Authenticator::verify`] calls it, off the reactor
    /// and a few at a time.
    fn check_password(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        if let Some(user) = self.remembered(name, password) {
            return Some(user);
        }
        let matched = match self.users.get(name) {
            Some(user) => user.password_matches(password).then_some(user),
            None => {
                let decoy = self.decoy(Mechanism::Sha256, name);
                let _ = decoy.matches(Mechanism::Sha256, password);
                None
            }
        };
        let user = matched?;
        let fingerprint = self.mac(&[name.as_bytes(), b"\0", password]);
        crate::lock::lock(&self.verified).insert(name.to_string(), fingerprint);
        Some(Arc::clone(user))
    }

    /// `Authenticator::check_password` off the reactor, with at most
    /// [`PASSWORD_CHECKS_AT_ONCE`] salting at a time; a remembered
    /// password is answered at once. Refused with [`ChecksBusy`] when the
    /// line is full or the turn does not come within
    /// [`PASSWORD_CHECK_WAIT_MAX`]. Safe to drop at any point: a waiting
    /// check leaves the line, and a salting one keeps its permit until the
    /// salting ends.
    pub async fn verify(
        self: &Arc<Self>,
        name: String,
        password: Vec<u8>,
    ) -> Result<Option<Arc<User>>, ChecksBusy> {
        if let Some(user) = self.remembered(&name, &password) {
            return Ok(Some(user));
        }
        let permit = {
            let in_line = InLine(&self.waiting);
            if self.waiting.fetch_add(1, Ordering::SeqCst) >= PASSWORD_CHECKS_WAITING_MAX {
                return Err(ChecksBusy);
            }
            let turn = Arc::clone(&self.checks).acquire_owned();
            let permit = tokio::time::timeout(PASSWORD_CHECK_WAIT_MAX, turn).await;
            drop(in_line);
            // The semaphore is never closed: only the wait can fail.
            permit.map_err(|_| ChecksBusy)?.map_err(|_| ChecksBusy)?
        };
        let auth = Arc::clone(self);
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _salting = Salting::start(&auth.salting, &auth.salting_most);
            auth.check_password(&name, &password)
        })
        .await;
        match checked {
            Ok(user) => Ok(user),
            Err(e) => {
                crate::log::warn(format_args!("a password check failed: {e}"));
                Ok(None)
            }
        }
    }

    /// The user, if this is the last password that matched for it: a
    /// check without salting the password again. `None` says nothing:
    /// `Authenticator::check_password` decides.
    pub fn remembered(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        let user = self.users.get(name)?;
        let known = crate::lock::lock(&self.verified).get(name).copied()?;
        let fingerprint = self.mac(&[name.as_bytes(), b"\0", password]);
        bool::from(known.ct_eq(&fingerprint)).then(|| Arc::clone(user))
    }

    /// HMAC-SHA-256 under the secret of the parts, concatenated.
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The bytes of the file at `path` if it holds at most `max_bytes`;
/// `Ok(None)` if it holds more (a wrong path, most likely: a log or a disk
/// image is not read whole into memory).
fn read_at_most(path: &std::path::Path, max_bytes: u64) -> std::io::Result<Option<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max_bytes + 1), &mut bytes)?;
    Ok((bytes.len() as u64 <= max_bytes).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let mut users = Users::default();
        users
            .put(User::new("alice", b"secret", vec![], vec![]).expect("user"))
            .expect("put");
        Authenticator::new(users).expect("authenticator")
    }

    #[test]
    fn passwords_are_checked_again_after_a_match_is_remembered() {
        let auth = authenticator();
        assert!(auth.check_password("alice", b"secret").is_some());
        assert!(auth.check_password("alice", b"secret").is_some());
        assert!(auth.check_password("alice", b"secreT").is_none());
        assert!(auth.check_password("bob", b"secret").is_none());
    }

    /// Many checks at once, half of them dropped as soon as they might
    /// be salting: never more than the limit salt at a time, and the
    /// permits all come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_more_than_the_limit_salt_at_once_even_when_callers_go_away() {
        let auth = Arc::new(authenticator());
        let checks: Vec<_> = (0..24)
            .map(|i| {
                let auth = Arc::clone(&auth);
                // Wrong passwords, each different: none is remembered.
                tokio::spawn(async move { auth.verify("alice".into(), vec![b'x'; i + 1]).await })
            })
            .collect();
        for (i, check) in checks.into_iter().enumerate() {
            if i % 2 == 0 {
                check.abort();
            } else {
                assert_eq!(check.await.expect("check"), Ok(None));
            }
        }
        // The aborted ones may still be salting: wait for their permits.
        let all = u32::try_from(PASSWORD_CHECKS_AT_ONCE).expect("a few");
        let permits = auth.checks.acquire_many(all).await.expect("permits");
        drop(permits);
        let most = auth.salting_most.load(Ordering::SeqCst);
        assert!(
            (1..=PASSWORD_CHECKS_AT_ONCE).contains(&most),
            "{most} salted at once"
        );
        assert_eq!(auth.waiting.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_line_is_refused_and_a_remembered_password_skips_it() {
        let auth = Arc::new(authenticator());
        let all = u32::try_from(PASSWORD_CHECKS_AT_ONCE).expect("a few");
        let held = auth.checks.acquire_many(all).await.expect("permits");
        let waiting: Vec<_> = (0..PASSWORD_CHECKS_WAITING_MAX)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.verify("alice".into(), b"wrong".to_vec()).await })
            })
            .collect();
        // One thread: each yield lets the checks run until they wait.
        while auth.waiting.load(Ordering::SeqCst) < PASSWORD_CHECKS_WAITING_MAX {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            auth.salting_most.load(Ordering::SeqCst),
            0,
            "salted without a permit"
        );
        assert_eq!(
            auth.verify("alice".into(), b"secret".to_vec()).await,
            Err(ChecksBusy)
        );
        drop(held);
        for check in waiting {
            assert_eq!(check.await.expect("check"), Ok(None));
        }
        assert!(
            auth.verify("alice".into(), b"secret".to_vec())
                .await
                .expect("a turn")
                .is_some()
        );
        let _held = auth.checks.acquire_many(all).await.expect("permits");
        assert!(
            auth.verify("alice".into(), b"secret".to_vec())
                .await
                .expect("no turn needed")
                .is_some(),
            "remembered"
        );
    }

    #[test]
    fn an_unknown_user_costs_the_rounds_of_the_costliest_user() {
        let mut users = Users::default();
        let mut user = User::new("alice", b"secret", vec![], vec![]).expect("user");
        // Only the count matters to the decoy, not keys made with it.
        user.scram_sha_512.iterations = 8192;
        users.put(user).expect("put");
        let auth = Authenticator::new(users).expect("authenticator");
        assert_eq!(auth.decoy(Mechanism::Sha256, "nobody").iterations, 8192);
    }

    #[test]
    fn a_decoy_is_the_same_for_a_name_and_differs_between_names() {
        let auth = authenticator();
        let one = auth.decoy(Mechanism::Sha512, "nobody");
        assert_eq!(one, auth.decoy(Mechanism::Sha512, "nobody"));
        assert_ne!(one.salt, auth.decoy(Mechanism::Sha512, "other").salt);
        assert!(one.check(Mechanism::Sha512).is_ok());
        // A real user has a salt per mechanism: equal salts would tell an
        // unknown name from a user.
        assert_ne!(one.salt, auth.decoy(Mechanism::Sha256, "nobody").salt);
    }
}
