//! The cluster secret: the key every node of a cluster holds and proves it
//! holds before its peers take anything from it (`serve
//! --cluster-secret-file PATH`; [`super::handshake`] uses it).
//!
//! It is read from a file, never from the command line, so it stays out of
//! `ps` and shell histories; and, as ssh treats a private key, a file that
//! its group or others may read, or that another user owns (and so may
//! read, or change back to readable), is refused: a secret that every
//! local user can read proves nothing.
//!
//! The file holds the key as text, one line: hex (`openssl rand -hex 32`)
//! or standard base64 (`head -c 32 /dev/urandom | base64`), decoding to at
//! least [`SECRET_BYTES_MIN`] bytes. Text, so a key cannot be a password
//! typed by hand by mistake, and no byte of it is whitespace that a trim
//! would take; one trailing `\n` or `\r\n` is allowed, nothing else.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Fewest bytes a secret's key may have, decoded: HMAC-SHA-256's own key
/// size. A node this one dials (whoever answers at a configured address)
/// gets this node's proof and can test guesses of the secret offline, so
/// it must be random, not a password; 32 random bytes cannot be guessed.
pub const SECRET_BYTES_MIN: usize = 32;

/// Most bytes a secret file may have, before anything is trimmed: a
/// secret is a line; a larger file is a wrong path (a log, a certificate
/// bundle), not read whole.
pub const SECRET_BYTES_MAX: usize = 4096;

/// The cluster secret. Its bytes are never printed.
pub struct Secret {
    bytes: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.bytes.len())
    }
}

impl Secret {
    /// A secret of this key, as is: at least [`SECRET_BYTES_MIN`] bytes,
    /// or the error says so.
    pub fn new(key: &[u8]) -> Result<Secret, String> {
        if key.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the cluster secret has {} bytes; it needs at least {SECRET_BYTES_MIN} random \
                 ones (make one with `head -c 32 /dev/urandom | base64`)",
                key.len()
            ));
        }
        Ok(Secret {
            bytes: key.to_vec(),
        })
    }

    /// The secret a file's text gives: one line of hex (when every
    /// character is a hex digit, in pairs) or else standard base64, with
    /// at most one trailing `\n` or `\r\n`, decoding to at least
    /// [`SECRET_BYTES_MIN`] bytes. The error says which rule failed.
    pub fn parse(text: &[u8]) -> Result<Secret, String> {
        use base64::Engine as _;
        if text.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "the file has over {SECRET_BYTES_MAX} bytes: is it the right file?"
            ));
        }
        let line = text
            .strip_suffix(b"\r\n")
            .or_else(|| text.strip_suffix(b"\n"))
            .unwrap_or(text);
        let key = if !line.is_empty()
            && line.len().is_multiple_of(2)
            && line.iter().all(u8::is_ascii_hexdigit)
        {
            line.chunks(2)
                .map(|pair| {
                    let digits = std::str::from_utf8(pair).unwrap_or_default();
                    u8::from_str_radix(digits, 16).unwrap_or_default()
                })
                .collect()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|e| {
                    format!(
                        "the cluster secret is neither hex nor base64 text ({e}); make one with \
                         `head -c 32 /dev/urandom | base64`"
                    )
                })?
        };
        let secret = Secret::new(&key);
        zero(key);
        secret
    }

    /// Reads the secret from the file at `path`: a regular file owned by
    /// the user running this node (or by root), that only its owner may
    /// read or write (mode 0600 or 0400), of
    /// [`SECRET_BYTES_MIN`] to [`SECRET_BYTES_MAX`] bytes. The error names
    /// the file and what to do.
    pub fn read(path: &Path) -> Result<Secret, String> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking, so a FIFO or a device at the path cannot hang the
        // start: the open returns, and the check below refuses it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("--cluster-secret-file {shown}: cannot open it: {e}"))?;
        // The open file's metadata, not the path's: what is checked is
        // what is read.
        let metadata = file
            .metadata()
            .map_err(|e| format!("--cluster-secret-file {shown}: cannot read its mode: {e}"))?;
        if !metadata.is_file() {
            return Err(format!("--cluster-secret-file {shown}: not a regular file"));
        }
        use std::os::unix::fs::MetadataExt;
        check_owner(metadata.uid(), rustix::process::geteuid().as_raw())
            .map_err(|why| format!("--cluster-secret-file {shown}: {why}"))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "--cluster-secret-file {shown}: permissions {mode:04o} are too open: a cluster \
                 secret that its group or others may read proves nothing; make it readable by \
                 its owner only (chmod 600 {shown})"
            ));
        }
        let mut bytes = Vec::new();
        file.take(SECRET_BYTES_MAX as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("--cluster-secret-file {shown}: cannot read it: {e}"))?;
        let secret = Secret::parse(&bytes);
        zero(bytes);
        secret.map_err(|why| format!("--cluster-secret-file {shown}: {why}"))
    }

    /// The key's bytes, for the handshake's MACs.
    pub(super) fn key(&self) -> &[u8] {
        &self.bytes
    }
}

/// Whether a secret file owned by `owner` may be read by a process of
/// effective user `euid`: only when it owns the file or root does, as
/// ssh requires of a private key. Another user's file is theirs to read,
/// or to make readable again, whatever its mode says now.
fn check_owner(owner: u32, euid: u32) -> Result<(), String> {
    if owner == euid || owner == 0 {
        return Ok(());
    }
    Err(format!(
        "it is owned by user {owner}, not by the user running this node ({euid}) or root: \
         another user may read it or change its mode (chown it to the user that runs seglog)"
    ))
}

impl Drop for Secret {
    fn drop(&mut self) {
        zero(std::mem::take(&mut self.bytes));
    }
}

/// Overwrites a copy of the secret's bytes before it is freed, so they do
/// not linger in freed memory (best effort: copies the allocator or the
/// kernel made are out of reach).
fn zero(mut bytes: Vec<u8>) {
    zeroize::Zeroize::zeroize(&mut bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join("secret");
        std::fs::write(&path, bytes).expect("writing the secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("setting the mode");
        path
    }

    /// `head -c 32 /dev/urandom | base64` once: 32 bytes, the last a space
    /// (0x20), which a trim of whitespace would have taken.
    const BASE64_LINE: &[u8] = b"q0pTQhv1cX6m0o8m4nY2Qk3yZz9WbQe1lG7rS2aVdSA=\n";

    #[test]
    fn hex_or_base64_lines_give_their_decoded_key() {
        let key = Secret::parse(BASE64_LINE).expect("a base64 line");
        assert_eq!(key.key().len(), 32);
        assert_eq!(key.key().last(), Some(&b' '));
        let hex = b"00ff".repeat(16);
        for line in [
            hex.clone(),
            [&hex[..], b"\n"].concat(),
            [&hex[..], b"\r\n"].concat(),
        ] {
            let key = Secret::parse(&line).expect("a hex line");
            assert_eq!(key.key(), [0x00, 0xff].repeat(16).as_slice());
            assert_eq!(format!("{key:?}"), "Secret(32 bytes)");
        }
        // Only one newline is trimmed, and nothing at the start.
        for line in [
            [&hex[..], b"\n\n"].concat(),
            [b" ", &hex[..]].concat(),
            [&hex[..], b" "].concat(),
        ] {
            let why = Secret::parse(&line).expect_err("refused");
            assert!(why.contains("neither hex nor base64"), "{why:?}");
        }
    }

    #[test]
    fn passwords_short_keys_and_huge_files_are_refused() {
        for (text, says) in [
            (
                &b"correct horse battery staple 123"[..],
                "neither hex nor base64",
            ),
            (b"00ff00ff\n", "has 4 bytes; it needs at least 32"),
            (b"c2hvcnQ=\n", "has 5 bytes; it needs at least 32"),
            (b"\n", "has 0 bytes"),
        ] {
            let why = Secret::parse(text).expect_err("refused");
            assert!(why.contains(says), "{why:?} does not say {says:?}");
        }
        // Over the limit before the newline is trimmed, even if the first
        // SECRET_BYTES_MAX bytes would be a good key.
        let mut huge = b"00".repeat(SECRET_BYTES_MAX / 2);
        huge.extend_from_slice(b"\n");
        let why = Secret::parse(&huge).expect_err("refused");
        assert!(why.contains("is it the right file"), "{why:?}");
    }

    #[test]
    fn a_private_file_is_read_and_an_open_one_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        for mode in [0o600, 0o400] {
            let secret = Secret::read(&file(dir.path(), BASE64_LINE, mode)).expect("a good secret");
            assert_eq!(secret.key().len(), 32);
        }
        for (mode, says) in [
            (0o644, "permissions 0644 are too open"),
            (0o640, "permissions 0640 are too open"),
            (0o604, "chmod 600"),
        ] {
            let why = Secret::read(&file(dir.path(), BASE64_LINE, mode)).expect_err("refused");
            assert!(why.contains(says), "{why:?} does not say {says:?}");
            assert!(why.contains("--cluster-secret-file"), "{why:?}");
        }
        let why = Secret::read(&dir.path().join("missing")).expect_err("refused");
        assert!(why.contains("cannot open it"), "{why:?}");
        let why = Secret::read(dir.path()).expect_err("refused");
        assert!(why.contains("not a regular file"), "{why:?}");
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("running mkfifo");
        assert!(made.success());
        let why = Secret::read(&fifo).expect_err("refused");
        assert!(why.contains("not a regular file"), "{why:?}");
    }

    #[test]
    fn a_file_of_another_user_is_refused_whatever_its_mode() {
        assert_eq!(check_owner(1000, 1000), Ok(()));
        assert_eq!(check_owner(0, 1000), Ok(()));
        let why = check_owner(1001, 1000).expect_err("refused");
        assert!(why.contains("owned by user 1001"), "{why:?}");
        assert!(
            check_owner(1000, 0).is_err(),
            "root reads another user's file"
        );
        // On a real file: only root can give a file away (chown), and
        // root is the user another's 0600 file does not stop, so this
        // part runs as root (as the tests here do); check_owner above
        // runs everywhere.
        if rustix::process::geteuid().is_root() {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = file(dir.path(), BASE64_LINE, 0o600);
            std::os::unix::fs::chown(&path, Some(4242), None).expect("chown as root");
            let why = Secret::read(&path).expect_err("refused");
            assert!(why.contains("owned by user 4242"), "{why:?}");
            assert!(why.contains("--cluster-secret-file"), "{why:?}");
        }
    }
}
