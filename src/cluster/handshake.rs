//! How two nodes prove to each other that they hold the cluster secret,
//! and how every frame after that proves it comes from the authenticated
//! peer, in order, once (no I/O here; [`super::link`] runs it).
//!
//! The exchange, on every connection (D dials, A accepts; `frame.rs`
//! has the frames' bytes):
//!
//! ```text
//! D → A  Hello  {cluster, version, from: D, to: A, nonce: nD}
//! A → D  Hello  {cluster, version, from: A, to: D, nonce: nA}  (or Refuse, close)
//! D → A  Proof  HMAC(secret, "seglog-peer/3 dialer"   || T)                (or D closes)
//! A → D  Proof  HMAC(secret, "seglog-peer/3 acceptor" || T)                (or Refuse, close)
//! D → A  Members {D's --peers}, always the first frame after the proofs
//! D → A  frames, each body followed by
//!        HMAC(session, seq || body),  session = HMAC(secret, "seglog-peer/3 session" || T)
//!
//! T = SHA-256("seglog-peer/3 transcript" || len(HD) || HD || len(HA) || HA)
//! ```
//!
//! where `HD` and `HA` are the two hello frames' bodies, byte for byte as
//! sent, and `len` is a 4-byte big-endian length. What a stranger learns
//! before any proof is what the acceptor's hello says: that a node listens
//! there, its cluster id and node id (the stranger must have named both
//! rightly to be answered at all), the protocol version, and a fresh nonce;
//! nothing of the membership, which only the dialer sends, sealed, after
//! both proofs (and which no side answers with). So the transcript binds
//! both nonces, both node ids (and which of them dialed), the cluster id
//! and the protocol version: a MITM that changes
//! any of them makes both proofs fail. Each side draws its nonce fresh
//! from the OS, so a recorded exchange replayed to either side meets a
//! nonce it does not match; the role in each proof's label keeps a side
//! from answering a challenge with the other side's own proof (a
//! reflection), and the ids in the hellos keep a proof made for one
//! direction or pair of nodes from serving another. Proofs and frame tags
//! are compared in constant time. The dialer proves first: the acceptor
//! answers anyone who connects, and must not hand a stranger a proof to
//! test guesses of the secret against; the dialer proves only to the node
//! at an address it was configured with.
//!
//! After the proofs, every frame D sends carries a tag under a key that
//! only this connection's two ends know, over a sequence number both ends
//! count from 0 (it is not sent): a frame injected, dropped, reordered,
//! replayed, or taken from another connection fails its tag, and the
//! connection is closed. Frames are authenticated, not encrypted: the
//! links carry the Raft groups' entries in the clear (see
//! `docs/serve-cluster-design.md`).

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secret::Secret;

/// Bytes of a nonce: 256 bits from the OS, never repeated in practice.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof and of a frame's tag: a whole HMAC-SHA-256, not cut.
pub const TAG_BYTES: usize = 32;

/// A proof, or a frame's tag.
pub type Tag = [u8; TAG_BYTES];

const TRANSCRIPT_LABEL: &[u8] = b"seglog-peer/3 transcript";
const DIALER_LABEL: &[u8] = b"seglog-peer/3 dialer";
const ACCEPTOR_LABEL: &[u8] = b"seglog-peer/3 acceptor";
const SESSION_LABEL: &[u8] = b"seglog-peer/3 session";

/// Which end of a connection makes a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Acceptor,
}

/// A fresh nonce, as the hello carries it (hex); the error if the OS
/// gives no randomness (then no connection can be made safely).
pub fn nonce() -> Result<String, String> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot draw a nonce: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `text` has a nonce's form: [`NONCE_BYTES`] bytes in lowercase
/// hex.
pub fn is_nonce(text: &str) -> bool {
    text.len() == 2 * NONCE_BYTES
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Tag {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The hash of both hellos, which the proofs and the session key are
/// computed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transcript([u8; 32]);

impl Transcript {
    /// The transcript of the dialer's hello body and the acceptor's, byte
    /// for byte as sent (each at most a hello frame's limit).
    pub fn new(dialer_hello: &[u8], acceptor_hello: &[u8]) -> Transcript {
        let mut hash = Sha256::new();
        hash.update(TRANSCRIPT_LABEL);
        for hello in [dialer_hello, acceptor_hello] {
            let length = u32::try_from(hello.len()).unwrap_or(u32::MAX);
            hash.update(length.to_be_bytes());
            hash.update(hello);
        }
        Transcript(hash.finalize().into())
    }

    /// The proof that `role`'s end holds `secret`.
    pub fn proof(&self, secret: &Secret, role: Role) -> Tag {
        let label = match role {
            Role::Dialer => DIALER_LABEL,
            Role::Acceptor => ACCEPTOR_LABEL,
        };
        mac(secret.key(), &[label, &self.0])
    }

    /// Whether `proof` is `role`'s proof under `secret`, compared in
    /// constant time.
    pub fn verify(&self, secret: &Secret, role: Role, proof: &[u8]) -> bool {
        bool::from(self.proof(secret, role).ct_eq(proof))
    }

    /// The session of the frames that follow a verified exchange.
    pub fn session(&self, secret: &Secret) -> Session {
        Session {
            key: mac(secret.key(), &[SESSION_LABEL, &self.0]),
            sequence: 0,
        }
    }
}

/// One end of a connection's frames after the proofs: the dialer seals,
/// the acceptor opens, each counting frames from 0.
pub struct Session {
    key: Tag,
    /// The number of the next frame.
    sequence: u64,
}

impl Session {
    /// The tag of the next frame's body, and the count moved on.
    pub fn seal(&mut self, body: &[u8]) -> Tag {
        let tag = mac(&self.key, &[&self.sequence.to_be_bytes(), body]);
        // 2^64 frames would take millennia at any link's rate.
        self.sequence = self.sequence.wrapping_add(1);
        tag
    }

    /// The body of the next frame, its tag (its last [`TAG_BYTES`])
    /// checked and cut off; the error says why it is not the next frame
    /// of this session (and the connection must close).
    pub fn open<'a>(&mut self, sealed: &'a [u8]) -> Result<&'a [u8], String> {
        let Some(split) = sealed.len().checked_sub(TAG_BYTES).filter(|&at| at > 0) else {
            return Err(format!(
                "a frame of {} bytes, too short for its tag",
                sealed.len()
            ));
        };
        let (body, tag) = sealed.split_at(split);
        let expected = mac(&self.key, &[&self.sequence.to_be_bytes(), body]);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(format!(
                "frame {} of the session has a wrong tag (forged, replayed, reordered or \
                 corrupted)",
                self.sequence
            ));
        }
        self.sequence = self.sequence.wrapping_add(1);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(fill: u8) -> Secret {
        Secret::new(&[fill; 32]).expect("a valid secret")
    }

    #[test]
    fn proofs_hold_only_for_their_role_secret_and_transcript() {
        let (ours, theirs) = (secret(b'a'), secret(b'b'));
        let t = Transcript::new(b"dialer hello", b"acceptor hello");
        let dialer = t.proof(&ours, Role::Dialer);
        assert!(t.verify(&ours, Role::Dialer, &dialer));
        // Reflected: the other role's proof is not this one's.
        assert!(!t.verify(&ours, Role::Acceptor, &dialer));
        // Another secret.
        assert!(!t.verify(&theirs, Role::Dialer, &dialer));
        // Another transcript: the hellos swapped, or one byte changed.
        let swapped = Transcript::new(b"acceptor hello", b"dialer hello");
        assert!(!swapped.verify(&ours, Role::Dialer, &dialer));
        let changed = Transcript::new(b"dialer hellp", b"acceptor hello");
        assert!(!changed.verify(&ours, Role::Dialer, &dialer));
        // The lengths are bound: moving a byte from one hello to the other
        // is another transcript.
        let moved = Transcript::new(b"dialer hell", b"oacceptor hello");
        assert_ne!(moved, t);
        assert!(!t.verify(&ours, Role::Dialer, &dialer[..31]));
    }

    #[test]
    fn a_session_opens_its_frames_once_and_in_order() {
        let t = Transcript::new(b"d", b"a");
        let (mut sealer, mut opener) = (t.session(&secret(b'a')), t.session(&secret(b'a')));
        let sealed = |tag: Tag, body: &[u8]| [body, &tag].concat();
        let first = sealed(sealer.seal(b"first"), b"first");
        let second = sealed(sealer.seal(b"second"), b"second");
        // Out of order: the second frame first.
        assert!(opener.open(&second).is_err());
        assert_eq!(opener.open(&first), Ok(&b"first"[..]));
        // Replayed.
        assert!(opener.open(&first).is_err());
        assert_eq!(opener.open(&second), Ok(&b"second"[..]));
        // Changed, and too short.
        let mut third = sealed(sealer.seal(b"third"), b"third");
        third[0] ^= 1;
        assert!(opener.open(&third).is_err());
        assert!(opener.open(&[0; TAG_BYTES]).is_err());
        // Another connection's session.
        let mut other = Transcript::new(b"d", b"a2").session(&secret(b'a'));
        let theirs = sealed(other.seal(b"x"), b"x");
        let mut fresh = t.session(&secret(b'a'));
        assert!(fresh.open(&theirs).is_err());
    }

    #[test]
    fn nonces_are_fresh_and_well_formed() {
        let (a, b) = (nonce().expect("a nonce"), nonce().expect("a nonce"));
        assert!(is_nonce(&a) && is_nonce(&b));
        assert_ne!(a, b);
        assert!(!is_nonce(&a[1..]));
        assert!(!is_nonce(&"g".repeat(2 * NONCE_BYTES)));
        assert!(!is_nonce(&"A".repeat(2 * NONCE_BYTES)));
    }
}
