//! The users file (`seglog serve --users PATH`, managed by `seglog
//! users`): per user, a SCRAM-SHA-256 and a SCRAM-SHA-512 credential
//! (salt, iterations, StoredKey, ServerKey; never the password), and the
//! topic prefixes the user may read and write.
//!
//! ```json
//! {"version": 1, "users": [
//!   {"name": "alice",
//!    "scram_sha_256": {"salt": "<base64>", "iterations": 4096,
//!                      "stored_key": "<base64>", "server_key": "<base64>"},
//!    "scram_sha_512": {...},
//!    "read": ["orders."], "write": []}]}
//! ```
//!
//! It is replaced whole and atomically (a temporary file, fsynced, renamed
//! over it, the directory fsynced), readable by its owner only: the keys
//! let whoever holds them try passwords offline.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::scram::{Credential, Mechanism};
use crate::storage::backend::RealFs;
use crate::storage::fsutil;

/// The file's format version, written and required.
pub const FORMAT_VERSION: u32 = 1;

/// Largest users file read: far more than [`USERS_MAX`] users take, and a
/// bound on what a wrong path (a log file, a disk image) makes us read.
pub const FILE_BYTES_MAX: u64 = 16 << 20;

/// Most users in a file: each is a few hundred bytes and is looked up by
/// name, so this bounds memory, not speed.
pub const USERS_MAX: usize = 10_000;

/// Longest user name, in bytes: Kafka principals and HTTP basic auth
/// user names are short; this keeps SASL messages small.
pub const NAME_BYTES_MAX: usize = 255;

/// Longest password, in bytes: room for generated secrets, and a bound
/// on what a PLAIN message carries.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Most prefixes of one kind per user: each topic name checked is
/// compared with each, so a user's list stays short.
pub const PREFIXES_MAX: usize = 100;

/// One user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub scram_sha_256: Credential,
    pub scram_sha_512: Credential,
    /// Prefixes of the topics the user may read (fetch, list offsets,
    /// commit offsets of). Both lists empty: every topic, read and write.
    pub read: Vec<String>,
    /// Prefixes of the topics the user may write (produce, create, delete,
    /// alter).
    pub write: Vec<String>,
}

impl User {
    /// A new user with fresh credentials for `password`.
    pub fn new(
        name: &str,
        password: &[u8],
        read: Vec<String>,
        write: Vec<String>,
    ) -> Result<User, String> {
        check_name(name)?;
        check_password(password)?;
        check_prefixes(&read, "read")?;
        check_prefixes(&write, "write")?;
        Ok(User {
            name: name.to_string(),
            scram_sha_256: Credential::new(Mechanism::Sha256, password)?,
            scram_sha_512: Credential::new(Mechanism::Sha512, password)?,
            read,
            write,
        })
    }

    pub fn credential(&self, mechanism: Mechanism) -> &Credential {
        match mechanism {
            Mechanism::Sha256 => &self.scram_sha_256,
            Mechanism::Sha512 => &self.scram_sha_512,
        }
    }

    /// Whether `password` is this user's (PLAIN, HTTP basic auth): checked
    /// against the SCRAM-SHA-256 credential.
    pub fn password_matches(&self, password: &[u8]) -> bool {
        self.scram_sha_256.matches(Mechanism::Sha256, password)
    }
}

/// Checks a user name: 1 to [`NAME_BYTES_MAX`] bytes, no control
/// character, and no ':' (HTTP basic auth splits at the first one).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_BYTES_MAX {
        return Err(format!(
            "a user name is 1 to {NAME_BYTES_MAX} bytes, not {}",
            name.len()
        ));
    }
    if name.chars().any(|c| c.is_control() || c == ':') {
        return Err(format!(
            "a user name has no ':' and no control character: {name:?}"
        ));
    }
    Ok(())
}

/// Checks a password: 1 to [`PASSWORD_BYTES_MAX`] bytes, UTF-8 (SCRAM
/// clients send it so), no NUL (PLAIN separates its fields with NULs).
pub fn check_password(password: &[u8]) -> Result<(), String> {
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(format!(
            "a password is 1 to {PASSWORD_BYTES_MAX} bytes, not {}",
            password.len()
        ));
    }
    if std::str::from_utf8(password).is_err() || password.contains(&0) {
        return Err("a password is UTF-8 text without NUL characters".into());
    }
    Ok(())
}

fn check_prefixes(prefixes: &[String], kind: &str) -> Result<(), String> {
    if prefixes.len() > PREFIXES_MAX {
        return Err(format!(
            "at most {PREFIXES_MAX} {kind} prefixes per user, not {}",
            prefixes.len()
        ));
    }
    Ok(())
}

/// The users of a file, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    by_name: BTreeMap<String, User>,
}

impl Users {
    pub fn get(&self, name: &str) -> Option<&User> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.by_name.values()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Adds `user`, or replaces the user of its name (a new password or
    /// new prefixes); says whether it replaced one.
    pub fn put(&mut self, user: User) -> Result<bool, String> {
        if !self.by_name.contains_key(&user.name) && self.by_name.len() >= USERS_MAX {
            return Err(format!("a users file holds at most {USERS_MAX} users"));
        }
        Ok(self.by_name.insert(user.name.clone(), user).is_some())
    }

    /// Removes the user `name`; says whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        self.by_name.remove(name).is_some()
    }

    /// Reads the file at `path`; a missing file is an error (`serve`
    /// must not start open when its users file is gone).
    pub fn load(path: &Path) -> Result<Users, String> {
        let bytes = super::read_at_most(path, FILE_BYTES_MAX)
            .map_err(|e| format!("cannot open the users file {}: {e}", path.display()))?
            .ok_or_else(|| {
                format!(
                    "the users file {} is over {FILE_BYTES_MAX} bytes",
                    path.display()
                )
            })?;
        Users::decode(&bytes).map_err(|e| format!("the users file {}: {e}", path.display()))
    }

    /// Reads the file at `path`, or no users if it does not exist yet
    /// (`seglog users add` creates it).
    pub fn load_or_empty(path: &Path) -> Result<Users, String> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Users::default()),
            _ => Users::load(path),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Users, String> {
        let file: FileJson =
            serde_json::from_slice(bytes).map_err(|e| format!("not a users file: {e}"))?;
        if file.version != FORMAT_VERSION {
            return Err(format!(
                "format version {}, this seglog reads {FORMAT_VERSION}",
                file.version
            ));
        }
        if file.users.len() > USERS_MAX {
            return Err(format!("{} users, over {USERS_MAX}", file.users.len()));
        }
        let mut users = Users::default();
        for json in file.users {
            let name = json.name.clone();
            let user = json
                .into_user()
                .map_err(|e| format!("user {name:?}: {e}"))?;
            if users.put(user)? {
                return Err(format!("user {name:?} is listed twice"));
            }
        }
        Ok(users)
    }

    fn encode(&self) -> Vec<u8> {
        let file = FileJson {
            version: FORMAT_VERSION,
            users: self.by_name.values().map(UserJson::from).collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("the users encode as JSON");
        bytes.push(b'\n');
        bytes
    }

    /// Replaces the file at `path` with these users, atomically: a
    /// temporary file beside it (mode 0600), fsynced, renamed over it, the
    /// directory fsynced. A crash leaves the old file or the new one.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("cannot {what} the users file {}: {e}", path.display())
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut tmp_name = path
            .file_name()
            .ok_or_else(|| fail("name", &"no file name"))?
            .to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        // A stale temporary file (a crash, or planted) would keep its mode
        // and could be a symlink: removed, then created anew.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("remove the stale temporary file of", &e)),
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(|e| fail("create", &e))?;
        file.write_all(&self.encode())
            .map_err(|e| fail("write", &e))?;
        file.sync_all().map_err(|e| fail("fsync", &e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| fail("rename over", &e))?;
        fsutil::sync_dir(&RealFs, dir).map_err(|e| fail("fsync the directory of", &e))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileJson {
    version: u32,
    users: Vec<UserJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserJson {
    name: String,
    scram_sha_256: CredentialJson,
    scram_sha_512: CredentialJson,
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    write: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialJson {
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

impl UserJson {
    fn into_user(self) -> Result<User, String> {
        check_name(&self.name)?;
        check_prefixes(&self.read, "read")?;
        check_prefixes(&self.write, "write")?;
        let user = User {
            scram_sha_256: self.scram_sha_256.into_credential(Mechanism::Sha256)?,
            scram_sha_512: self.scram_sha_512.into_credential(Mechanism::Sha512)?,
            name: self.name,
            read: self.read,
            write: self.write,
        };
        Ok(user)
    }
}

impl From<&User> for UserJson {
    fn from(user: &User) -> UserJson {
        UserJson {
            name: user.name.clone(),
            scram_sha_256: CredentialJson::from(&user.scram_sha_256),
            scram_sha_512: CredentialJson::from(&user.scram_sha_512),
            read: user.read.clone(),
            write: user.write.clone(),
        }
    }
}

impl CredentialJson {
    fn into_credential(self, mechanism: Mechanism) -> Result<Credential, String> {
        let decode = |field: &str, text: &str| {
            BASE64
                .decode(text)
                .map_err(|e| format!("{} {field} is not base64: {e}", mechanism.name()))
        };
        let credential = Credential {
            salt: decode("salt", &self.salt)?,
            iterations: self.iterations,
            stored_key: decode("stored_key", &self.stored_key)?,
            server_key: decode("server_key", &self.server_key)?,
        };
        credential.check(mechanism)?;
        Ok(credential)
    }
}

impl From<&Credential> for CredentialJson {
    fn from(credential: &Credential) -> CredentialJson {
        CredentialJson {
            salt: BASE64.encode(&credential.salt),
            iterations: credential.iterations,
            stored_key: BASE64.encode(&credential.stored_key),
            server_key: BASE64.encode(&credential.server_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_file_reads_back_the_same_and_holds_no_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.json");
        let mut users = Users::default();
        let password = "correct horse battery staple";
        let alice =
            User::new("alice", password.as_bytes(), vec!["orders.".into()], vec![]).expect("user");
        assert!(!users.put(alice).expect("put"));
        users.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(password), "{text}");
        assert!(!text.contains(&BASE64.encode(password)), "{text}");
        let again = Users::load(&path).expect("load");
        assert_eq!(again, users);
        let alice = again.get("alice").expect("alice");
        assert!(alice.password_matches(password.as_bytes()));
        assert!(!alice.password_matches(b"wrong"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_files_are_errors_that_say_what_is_wrong() {
        let alice = User::new("alice", b"pw", vec![], vec![]).expect("user");
        let mut users = Users::default();
        users.put(alice).expect("put");
        let good = String::from_utf8(users.encode()).expect("utf-8");
        for (bad, expected) in [
            ("{}".to_string(), "not a users file"),
            (
                good.replace("\"version\": 1", "\"version\": 2"),
                "format version 2",
            ),
            (
                good.replace("\"iterations\": 4096", "\"iterations\": 1"),
                "iterations 1",
            ),
            (
                good.replace("\"name\": \"alice\"", "\"name\": \"a:b\""),
                "no ':'",
            ),
        ] {
            let error = Users::decode(bad.as_bytes()).expect_err(&bad);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(User::new("", b"pw", vec![], vec![]).is_err());
        assert!(User::new("a:b", b"pw", vec![], vec![]).is_err());
        assert!(User::new("a", b"", vec![], vec![]).is_err());
        assert!(User::new("a", b"p\0w", vec![], vec![]).is_err());
        assert!(User::new("a", &[b'x'; PASSWORD_BYTES_MAX + 1], vec![], vec![]).is_err());
    }
}
