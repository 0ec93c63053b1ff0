//! The cluster secret: the key every node of a cluster holds and proves it
//! holds before its peers take anything from it (`serve
//! --cluster-secret-file PATH`; [`super::handshake`] uses it).
//!
//! It is read from a file, never from the command line, so it stays out of
//! `ps` and shell histories; and, as ssh treats a private key, a file that
//! its group or others may read is refused: a secret that every local user
//! can read proves nothing.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Fewest bytes a secret may have: HMAC-SHA-256's own key size. Anyone
/// who records one handshake can test guesses of the secret offline, so
/// it must be random, not a password; 32 random bytes (`head -c 32
/// /dev/urandom | base64`, 44 characters) cannot be guessed, and a
/// shorter file is most likely a password typed by hand.
pub const SECRET_BYTES_MIN: usize = 32;

/// Most bytes a secret file may have: a secret is a line; a larger file is
/// a wrong path (a log, a certificate bundle), not read whole.
pub const SECRET_BYTES_MAX: usize = 4096;

/// The cluster secret. Its bytes are never printed.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.bytes.len())
    }
}

impl Secret {
    /// A secret of these bytes, trailing ASCII whitespace removed (a file
    /// written with `echo` ends with a newline, one written with `head -c`
    /// does not: both give the same key). At least [`SECRET_BYTES_MIN`]
    /// bytes remain, or the error says so.
    pub fn new(bytes: &[u8]) -> Result<Secret, String> {
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |last| last + 1);
        let bytes = bytes.get(..end).unwrap_or_default();
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "the cluster secret has {} bytes; it needs at least {SECRET_BYTES_MIN} random \
                 ones (make one with `head -c 32 /dev/urandom | base64`)",
                bytes.len()
            ));
        }
        if bytes.len() > SECRET_BYTES_MAX {
            return Err(format!(
                "the cluster secret has {} bytes, over {SECRET_BYTES_MAX}: is it the right file?",
                bytes.len()
            ));
        }
        Ok(Secret {
            bytes: bytes.to_vec(),
        })
    }

    /// Reads the secret from the file at `path`: a regular file that only
    /// its owner may read or write (mode 0600 or 0400), of
    /// [`SECRET_BYTES_MIN`] to [`SECRET_BYTES_MAX`] bytes. The error names
    /// the file and what to do.
    pub fn read(path: &Path) -> Result<Secret, String> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let file = std::fs::File::open(path)
            .map_err(|e| format!("--cluster-secret-file {shown}: cannot open it: {e}"))?;
        // The open file's metadata, not the path's: what is checked is
        // what is read.
        let metadata = file
            .metadata()
            .map_err(|e| format!("--cluster-secret-file {shown}: cannot read its mode: {e}"))?;
        if !metadata.is_file() {
            return Err(format!("--cluster-secret-file {shown}: not a regular file"));
        }
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
        Secret::new(&bytes).map_err(|why| format!("--cluster-secret-file {shown}: {why}"))
    }

    /// The key's bytes, for the handshake's MACs.
    pub(super) fn key(&self) -> &[u8] {
        &self.bytes
    }
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

    #[test]
    fn a_private_file_of_enough_bytes_is_read_without_its_newline() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let line = b"0123456789abcdef0123456789abcdef\n";
        let secret = Secret::read(&file(dir.path(), line, 0o600)).expect("a good secret");
        assert_eq!(secret.key(), &line[..32]);
        assert_eq!(format!("{secret:?}"), "Secret(32 bytes)");
        let secret = Secret::read(&file(dir.path(), line, 0o400)).expect("a read-only secret");
        assert_eq!(secret.key(), &line[..32]);
    }

    #[test]
    fn open_short_or_huge_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let good = [b'k'; SECRET_BYTES_MIN];
        for (bytes, mode, says) in [
            (&good[..], 0o644, "permissions 0644 are too open"),
            (&good[..], 0o640, "permissions 0640 are too open"),
            (&good[..], 0o604, "chmod 600"),
            (&good[..SECRET_BYTES_MIN - 1], 0o600, "has 31 bytes"),
            (b"    \n\n", 0o600, "has 0 bytes"),
            (
                &[b'k'; SECRET_BYTES_MAX + 1][..],
                0o600,
                "is it the right file",
            ),
        ] {
            let why = Secret::read(&file(dir.path(), bytes, mode)).expect_err("refused");
            assert!(why.contains(says), "{why:?} does not say {says:?}");
            assert!(why.contains("--cluster-secret-file"), "{why:?}");
        }
        let why = Secret::read(&dir.path().join("missing")).expect_err("refused");
        assert!(why.contains("cannot open it"), "{why:?}");
        let why = Secret::read(dir.path()).expect_err("refused");
        assert!(why.contains("not a regular file"), "{why:?}");
    }
}
