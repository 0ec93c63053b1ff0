//! SCRAM (RFC 5802, with SHA-256 and SHA-512 as RFC 7677 and Kafka name
//! them): the salted credential a users file keeps, and the server's side
//! of one exchange, without I/O: the Kafka front end feeds it the client's
//! two messages and sends back what it returns.
//!
//! A credential is what RFC 5802 calls the server's stored data: salt,
//! iteration count, StoredKey = H(HMAC(SaltedPassword, "Client Key")) and
//! ServerKey = HMAC(SaltedPassword, "Server Key"), with SaltedPassword =
//! PBKDF2-HMAC(password, salt, iterations). The password itself is never
//! kept. PLAIN and HTTP basic auth are checked against the same credential
//! ([`Credential::matches`]): the password given is salted again and its
//! StoredKey compared, in constant time.
//!
//! Passwords are taken as their UTF-8 bytes, without SASLprep, as Kafka's
//! own SCRAM does (and librdkafka, which sends them so).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit, Mac};
use sha2::Digest;
use subtle::ConstantTimeEq;

/// RFC 7677's minimum iteration count, and Kafka's default.
pub const ITERATIONS_MIN: u32 = 4096;

/// Kafka's maximum: a users file asking for more would make every PLAIN
/// login and every new credential cost more than a login should.
pub const ITERATIONS_MAX: u32 = 16_384;

/// Bytes of a new salt: RFC 5802 asks for a random salt per user; 32 is
/// the size Kafka's tools draw.
pub const SALT_BYTES: usize = 32;

/// Largest salt a users file may give: room for any tool's salt, small
/// enough to check.
pub const SALT_BYTES_MAX: usize = 128;

/// Bytes of the server's part of a nonce (base64 in the message): 18
/// random bytes, 144 bits, unguessable.
const NONCE_BYTES: usize = 18;

/// Largest client nonce taken: librdkafka sends 32 characters, the Java
/// client about 25; a client cannot make the exchange hold more.
const CLIENT_NONCE_BYTES_MAX: usize = 256;

/// The two SCRAM mechanisms served, by their SASL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL name (RFC 7677 for SHA-256; Kafka's for SHA-512).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// PBKDF2-HMAC with this hash: RFC 5802's Hi().
    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(password, salt, iterations).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<sha2::Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut mac = <hmac::Hmac<sha2::Sha512> as KeyInit>::new_from_slice(key)
                    .expect("HMAC takes a key of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// Bytes of this hash's output, which StoredKey and ServerKey have.
    pub fn key_bytes(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }
}

/// One user's stored SCRAM data for one mechanism.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential of `password` with `salt` and `iterations`.
    pub fn derive(mechanism: Mechanism, password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = mechanism.salted_password(password, salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, b"Server Key"),
        }
    }

    /// A new credential for `password`, with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &[u8]) -> Result<Self, String> {
        let mut salt = [0u8; SALT_BYTES];
        getrandom::fill(&mut salt).map_err(|e| format!("cannot draw a random salt: {e}"))?;
        Ok(Credential::derive(
            mechanism,
            password,
            &salt,
            ITERATIONS_MIN,
        ))
    }

    /// Whether `password` is the one this credential was made from
    /// (PLAIN, HTTP basic auth): its StoredKey, compared in constant time.
    pub fn matches(&self, mechanism: Mechanism, password: &[u8]) -> bool {
        let again = Credential::derive(mechanism, password, &self.salt, self.iterations);
        bool::from(again.stored_key.ct_eq(&self.stored_key))
    }

    /// Checks what a users file gave: sizes and the iteration range.
    pub fn check(&self, mechanism: Mechanism) -> Result<(), String> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(format!(
                "{} iterations {}, outside {ITERATIONS_MIN} to {ITERATIONS_MAX}",
                mechanism.name(),
                self.iterations
            ));
        }
        if self.salt.is_empty() || self.salt.len() > SALT_BYTES_MAX {
            return Err(format!(
                "a {} salt of {} bytes, not 1 to {SALT_BYTES_MAX}",
                mechanism.name(),
                self.salt.len()
            ));
        }
        let bytes = mechanism.key_bytes();
        if self.stored_key.len() != bytes || self.server_key.len() != bytes {
            return Err(format!(
                "{} keys of {} and {} bytes, not {bytes}",
                mechanism.name(),
                self.stored_key.len(),
                self.server_key.len()
            ));
        }
        Ok(())
    }
}

/// Why an exchange failed: said to the client in its error message (it
/// tells nothing of whether the user exists) and logged.
#[derive(Debug, PartialEq, Eq)]
pub struct Failed(pub String);

/// The server's side of one SCRAM exchange, between the client's first
/// message and its last.
#[derive(Debug)]
pub struct Exchange {
    mechanism: Mechanism,
    /// The user named, if it exists; a user that does not exist is sent a
    /// credential of its own ([`Exchange::first`]) and fails at the proof,
    /// as a wrong password does, so the exchange does not tell names apart.
    user: Option<String>,
    credential: Credential,
    /// `n,,` or `y,,`: echoed by the client in `c=` of its last message.
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    /// The client's nonce and ours, which its last message must repeat.
    nonce: String,
}

impl Exchange {
    /// Takes the client's first message; returns the exchange and the
    /// server's first message. `lookup` gives a user's credential;
    /// `decoy` one for a user that does not exist (the same at every
    /// attempt for a name, so that its salt does not give it away).
    pub fn first(
        mechanism: Mechanism,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
        decoy: impl FnOnce(&str) -> Credential,
    ) -> Result<(Exchange, Vec<u8>), Failed> {
        let text = std::str::from_utf8(message)
            .map_err(|_| Failed("a SCRAM first message that is not UTF-8".into()))?;
        // gs2-header: channel binding flag, optional authzid, then the bare part.
        let mut parts = text.splitn(3, ',');
        let (flag, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
            (Some(flag), Some(authzid), Some(bare)) => (flag, authzid, bare),
            _ => return Err(Failed("a SCRAM first message without a GS2 header".into())),
        };
        match flag {
            "n" | "y" => {}
            _ if flag.starts_with("p=") => {
                return Err(Failed("SCRAM channel binding is not supported".into()));
            }
            _ => return Err(Failed(format!("a SCRAM GS2 flag {flag:?}"))),
        }
        let mut name = None;
        let mut client_nonce = None;
        for attribute in bare.split(',') {
            if let Some(value) = attribute.strip_prefix("n=") {
                name = Some(unescape_name(value)?);
            } else if let Some(value) = attribute.strip_prefix("r=") {
                client_nonce = Some(value);
            } else if attribute.starts_with("m=") {
                return Err(Failed("a SCRAM mandatory extension (m=)".into()));
            }
            // Other attributes are extensions (Kafka's `tokenauth=`): none
            // is acted on, and a token is no password, so it fails the proof.
        }
        let name = name.ok_or_else(|| Failed("a SCRAM first message without n=".into()))?;
        let client_nonce =
            client_nonce.ok_or_else(|| Failed("a SCRAM first message without r=".into()))?;
        if client_nonce.is_empty()
            || client_nonce.len() > CLIENT_NONCE_BYTES_MAX
            || !client_nonce
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b',')
        {
            return Err(Failed(
                "a SCRAM client nonce that is empty, too long or not printable".into(),
            ));
        }
        if let Some(authzid) = authzid.strip_prefix("a=")
            && unescape_name(authzid)? != name
        {
            return Err(Failed(
                "a SCRAM authorization id other than the user name".into(),
            ));
        }
        let (user, credential) = match lookup(&name) {
            Some(credential) => (Some(name), credential),
            None => {
                let credential = decoy(&name);
                (None, credential)
            }
        };
        let mut ours = [0u8; NONCE_BYTES];
        getrandom::fill(&mut ours).map_err(|e| Failed(format!("cannot draw a nonce: {e}")))?;
        let nonce = format!("{client_nonce}{}", BASE64.encode(ours));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let gs2_header = format!("{flag},{authzid},");
        let exchange = Exchange {
            mechanism,
            user,
            credential,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok((exchange, server_first.into_bytes()))
    }

    /// Takes the client's last message and checks its proof; returns the
    /// user authenticated and the server's last message (its signature,
    /// which proves to the client that the server holds its credential).
    pub fn last(self, message: &[u8]) -> Result<(String, Vec<u8>), Failed> {
        let text = std::str::from_utf8(message)
            .map_err(|_| Failed("a SCRAM final message that is not UTF-8".into()))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| Failed("a SCRAM final message without a proof".into()))?;
        let mut binding = None;
        let mut nonce = None;
        for attribute in without_proof.split(',') {
            if let Some(value) = attribute.strip_prefix("c=") {
                binding = Some(value);
            } else if let Some(value) = attribute.strip_prefix("r=") {
                nonce = Some(value);
            }
        }
        if binding != Some(&BASE64.encode(&self.gs2_header)) {
            return Err(Failed(
                "a SCRAM final message whose channel binding (c=) is not the GS2 header".into(),
            ));
        }
        // Kafka checks that the nonce ends with the exchange's, not that it
        // is the same: librdkafka 2.0 (Debian's kcat) sends its own nonce
        // again in front of it. The server's fresh part is still required,
        // and the proof signs the message as sent.
        if !nonce.is_some_and(|n| n.ends_with(&self.nonce)) {
            return Err(Failed(
                "a SCRAM final message without the nonce of this exchange".into(),
            ));
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| Failed("a SCRAM proof that is not base64".into()))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let mechanism = self.mechanism;
        let signature = mechanism.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(invalid_credentials(mechanism));
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let proven = bool::from(
            mechanism
                .hash(&client_key)
                .ct_eq(&self.credential.stored_key),
        );
        match self.user {
            Some(user) if proven => {
                let server_signature =
                    mechanism.hmac(&self.credential.server_key, auth_message.as_bytes());
                let last = format!("v={}", BASE64.encode(server_signature));
                Ok((user, last.into_bytes()))
            }
            _ => Err(invalid_credentials(mechanism)),
        }
    }
}

/// Kafka's message for a wrong password or an unknown user, alike.
pub fn invalid_credentials(mechanism: Mechanism) -> Failed {
    Failed(format!(
        "Authentication failed during authentication due to invalid credentials with SASL \
         mechanism {}",
        mechanism.name()
    ))
}

/// A SCRAM user name: `=2C` is a comma, `=3D` an equals sign, and any
/// other `=` is an error (RFC 5802, "saslname").
fn unescape_name(escaped: &str) -> Result<String, Failed> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3);
        match code {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => {
                return Err(Failed(format!(
                    "a SCRAM user name {escaped:?} with a bad '=' escape"
                )));
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677, section 3: user "user", password "pencil".
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    fn rfc_credential() -> Credential {
        let salt = BASE64.decode(SALT).expect("salt");
        Credential::derive(Mechanism::Sha256, b"pencil", &salt, 4096)
    }

    /// The RFC's exchange, with its server nonce in place of ours.
    fn rfc_exchange() -> Exchange {
        let (mut exchange, _) = Exchange::first(
            Mechanism::Sha256,
            CLIENT_FIRST.as_bytes(),
            |name| (name == "user").then(rfc_credential),
            |_| unreachable!("the user exists"),
        )
        .expect("first");
        exchange.nonce = format!("rOprNGfwEbeRWgbNEkqO{SERVER_NONCE}");
        exchange.server_first = format!("r={},s={SALT},i=4096", exchange.nonce);
        exchange
    }

    #[test]
    fn the_rfc_7677_exchange_is_accepted_and_signed_as_the_rfc_says() {
        let (user, last) = rfc_exchange().last(CLIENT_FINAL.as_bytes()).expect("proof");
        assert_eq!(user, "user");
        assert_eq!(String::from_utf8(last).expect("utf-8"), SERVER_FINAL);
    }

    #[test]
    fn a_wrong_proof_fails_with_kafkas_message() {
        let wrong = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        let failed = rfc_exchange()
            .last(wrong.as_bytes())
            .expect_err("wrong proof");
        assert_eq!(failed, invalid_credentials(Mechanism::Sha256));
    }

    #[test]
    fn another_nonce_or_binding_fails() {
        let nonce = CLIENT_FINAL.replace("r=rOpr", "r=xOpr");
        assert!(rfc_exchange().last(nonce.as_bytes()).is_err());
        let binding = CLIENT_FINAL.replace("c=biws", "c=eSws");
        assert!(rfc_exchange().last(binding.as_bytes()).is_err());
    }

    #[test]
    fn an_unknown_user_fails_at_the_proof_like_a_wrong_password() {
        let (exchange, server_first) = Exchange::first(
            Mechanism::Sha256,
            b"n,,n=nobody,r=abc",
            |_| None,
            |_| rfc_credential(),
        )
        .expect("first is answered");
        assert!(server_first.starts_with(b"r=abc"));
        let last = format!("c=biws,r={},p=AAAA", exchange.nonce);
        assert_eq!(
            exchange.last(last.as_bytes()).expect_err("unknown"),
            invalid_credentials(Mechanism::Sha256)
        );
    }

    #[test]
    fn garbage_first_messages_are_errors() {
        for message in [
            &b""[..],
            b"n,,",
            b"n,,r=abc",
            b"n,,n=user",
            b"p=tls-unique,,n=user,r=abc",
            b"x,,n=user,r=abc",
            b"n,,n=us=4er,r=abc",
            b"n,a=other,n=user,r=abc",
            b"n,,n=user,r=a b",
            b"\xff\xfe",
        ] {
            let result =
                Exchange::first(Mechanism::Sha512, message, |_| None, |_| rfc_credential());
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn plain_matches_the_password_only() {
        let credential = rfc_credential();
        assert!(credential.matches(Mechanism::Sha256, b"pencil"));
        assert!(!credential.matches(Mechanism::Sha256, b"pencil "));
        assert!(!credential.matches(Mechanism::Sha256, b""));
    }

    #[test]
    fn names_unescape() {
        assert_eq!(unescape_name("a=2Cb=3Dc").expect("ok"), "a,b=c");
        assert!(unescape_name("a=").is_err());
    }
}
