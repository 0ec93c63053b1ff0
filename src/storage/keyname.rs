//! Keys to directory names: injective, and never a path outside the data directory.
//!
//! A key's log lives in `logs/<name>/`. Two schemes, told apart by prefix:
//!
//! * `k.<escaped>` when the escaped key fits in [`NAME_BYTES_MAX`]. Bytes in
//!   `[A-Za-z0-9_.-]` stand for themselves, every other byte of the UTF-8 key
//!   becomes `%XX`. Since `%` is always escaped, decoding is unique; the `k.`
//!   prefix makes `""`, `"."` and `".."` ordinary names; `/` and NUL never
//!   survive escaping, so the name is one path component.
//! * `h.<16 hex digits>.<n>` for longer keys: a 64-bit FNV-1a hash of the key
//!   and a collision counter. The full key is stored in the directory's
//!   [`KEY_FILE_NAME`] file, which is compared on every lookup, so two keys
//!   that share a hash get different counters and the mapping stays injective.

use std::fmt::Write as _;

/// Longest key accepted, in UTF-8 bytes. A 1,000-character key of 4-byte
/// characters is 4,000 bytes; 4 KiB admits it and still bounds the memory a
/// hostile request can make us hold per key.
pub const KEY_BYTES_MAX: usize = 4096;

/// Longest directory name produced by the escaped scheme. Linux file names
/// are limited to 255 bytes; keeping well below leaves room for temporary
/// names built from a directory name.
pub const NAME_BYTES_MAX: usize = 200;

/// File inside an `h.` directory holding the full key bytes.
pub const KEY_FILE_NAME: &str = "KEY";

const ESCAPED_PREFIX: &str = "k.";
const HASHED_PREFIX: &str = "h.";

fn passes_unescaped(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

/// The `k.` name of `key`, or `None` if it would be longer than [`NAME_BYTES_MAX`].
pub fn escaped_name(key: &str) -> Option<String> {
    let mut name = String::with_capacity(ESCAPED_PREFIX.len() + key.len());
    name.push_str(ESCAPED_PREFIX);
    for &byte in key.as_bytes() {
        if passes_unescaped(byte) {
            name.push(byte as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(name, "%{byte:02X}");
        }
        if name.len() > NAME_BYTES_MAX {
            return None;
        }
    }
    Some(name)
}

/// 64-bit FNV-1a: small, stable across builds and platforms, and good enough
/// to spread keys; collisions are resolved by the counter, not assumed away.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hasher = FnvHasher::default();
    std::hash::Hasher::write(&mut hasher, bytes);
    std::hash::Hasher::finish(&hasher)
}

/// FNV-1a as a `Hasher`, for the store's map of open keys: it hashes a short
/// key in a few nanoseconds where SipHash takes tens, and that map is looked
/// up on every append. It does not resist chosen collisions, which is
/// acceptable there: the map never holds more than
/// [`crate::storage::store::OPEN_KEYS_MAX`] keys, so collisions cost a bounded scan.
#[derive(Clone, Copy)]
pub struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Prefix a key directory is renamed under while [`crate::storage::store::Store::remove_key`]
/// deletes it: the rename takes the key's name away in one step, and a crash
/// while the contents are deleted leaves an `rm.` directory that no key
/// lookup finds and that recovery deletes. Never the start of a key
/// directory's name (those start `k.` or `h.`).
pub const REMOVED_PREFIX: &str = "rm.";

/// The name a key directory called `dir_name` has while it is deleted.
pub fn removed_name(dir_name: &str) -> String {
    format!("{REMOVED_PREFIX}{dir_name}")
}

/// The `h.` name for a long key with collision counter `n`.
pub fn hashed_name(key: &str, n: u32) -> String {
    format!("{HASHED_PREFIX}{:016x}.{n}", fnv1a64(key.as_bytes()))
}

/// What a directory name says about its key.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodedName {
    /// The key itself, decoded from a `k.` name.
    Key(String),
    /// An `h.` name: the key is in the directory's [`KEY_FILE_NAME`].
    Hashed,
}

/// Decodes a directory name back to its key. `None` for names seglog does not
/// write (temporary directories, foreign files).
pub fn decode_name(name: &str) -> Option<DecodedName> {
    if let Some(rest) = name.strip_prefix(HASHED_PREFIX) {
        let (hash, counter) = rest.split_once('.')?;
        let valid = hash.len() == 16
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && counter.parse::<u32>().is_ok();
        return valid.then_some(DecodedName::Hashed);
    }
    let escaped = name.strip_prefix(ESCAPED_PREFIX)?;
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            // Only the uppercase form is ever written: anything else is not ours.
            if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            let decoded = u8::from_str_radix(hex, 16).ok()?;
            if passes_unescaped(decoded) {
                return None;
            }
            bytes.push(decoded);
            rest = &tail[2..];
        } else if passes_unescaped(byte) {
            bytes.push(byte);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok().map(DecodedName::Key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_round_trip_and_stay_one_component() {
        for key in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "a/b",
            "NUL",
            "k\u{0}",
            "é%41",
        ] {
            let name = escaped_name(key).expect("short key");
            assert!(!name.contains('/') && !name.contains('\0'), "{name}");
            assert!(name != "." && name != "..");
            assert_eq!(decode_name(&name), Some(DecodedName::Key(key.to_string())));
        }
    }

    #[test]
    fn long_keys_use_hashed_names() {
        let key = "ключ".repeat(250);
        assert_eq!(escaped_name(&key), None);
        let name = hashed_name(&key, 0);
        assert_eq!(decode_name(&name), Some(DecodedName::Hashed));
    }

    #[test]
    fn foreign_names_are_not_decoded() {
        for name in ["tmp.123", "k.%2f", "k.%41", "k.a/b", "h.xyz.0", "k.%4"] {
            assert_eq!(decode_name(name), None, "{name}");
        }
    }
}
