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

/// How long a wrong HTTP password's 401 waits: Kafka's default
/// `connection.failed.authentication.delay.ms`, which the Kafka listener
/// applies too, so a guesser gets no faster answers over HTTP.
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
    /// [`PASSWORD_CHECKS_AT_ONCE`] permits to salt a password.
    checks: Semaphore,
    /// Checks that got a permit, ever: what the tests see the limit by.
    admitted: AtomicUsize,
}

impl Authenticator {
    pub fn new(users: Users) -> Result<Authenticator, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("cannot draw a random key: {e}"))?;
        Ok(Authenticator {
            users: users
                .iter()
                .map(|u| (u.name.clone(), Arc::new(u.clone())))
                .collect(),
            secret,
            verified: Mutex::new(HashMap::new()),
            checks: Semaphore::new(PASSWORD_CHECKS_AT_ONCE),
            admitted: AtomicUsize::new(0),
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
    /// [`Authenticator::secret`], so the same name gets the same salt at
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
            iterations: scram::ITERATIONS_MIN,
            stored_key: derive(b"stored", keys),
            server_key: derive(b"server", keys),
        }
    }

    /// The user whose name and password these are (SASL/PLAIN, HTTP basic
    /// auth), or `None`. An unknown user costs the same work as a wrong
    /// password, so the time taken does not tell names apart.
    /// Salts the password: call it off the reactor, as [`Authenticator::verify`] does.
    pub fn check_password(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
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

    /// [`Authenticator::check_password`] off the reactor, with at most
    /// [`PASSWORD_CHECKS_AT_ONCE`] salting at a time; a remembered
    /// password is answered at once.
    pub async fn verify(self: &Arc<Self>, name: String, password: Vec<u8>) -> Option<Arc<User>> {
        if let Some(user) = self.remembered(&name, &password) {
            return Some(user);
        }
        // The semaphore is never closed, so the permit always comes.
        let _permit = self.checks.acquire().await.ok()?;
        self.admitted.fetch_add(1, Ordering::SeqCst);
        let auth = Arc::clone(self);
        tokio::task::spawn_blocking(move || auth.check_password(&name, &password))
            .await
            .ok()
            .flatten()
    }

    /// The user, if this is the last password that matched for it: a
    /// check without salting the password again. `None` says nothing:
    /// [`Authenticator::check_password`] decides.
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

    #[tokio::test(flavor = "current_thread")]
    async fn a_password_waits_for_a_permit_and_a_remembered_one_does_not() {
        let auth = Arc::new(authenticator());
        let permits = u32::try_from(PASSWORD_CHECKS_AT_ONCE).expect("a few");
        let all = auth.checks.acquire_many(permits).await.expect("permits");
        let waiting = tokio::spawn({
            let auth = Arc::clone(&auth);
            async move { auth.verify("alice".into(), b"wrong".to_vec()).await }
        });
        // One thread: each yield lets the check run until it waits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            auth.admitted.load(Ordering::SeqCst),
            0,
            "salted without a permit"
        );
        drop(all);
        assert!(waiting.await.expect("check").is_none());
        assert_eq!(auth.admitted.load(Ordering::SeqCst), 1);
        assert!(
            auth.verify("alice".into(), b"secret".to_vec())
                .await
                .is_some()
        );
        let _all = auth.checks.acquire_many(permits).await.expect("permits");
        assert!(
            auth.verify("alice".into(), b"secret".to_vec())
                .await
                .is_some()
        );
        assert_eq!(
            auth.admitted.load(Ordering::SeqCst),
            2,
            "a remembered one took a permit"
        );
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
