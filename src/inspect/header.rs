//! Checking the header that starts every `.log`, `.index` and journal file,
//! and deciding whether the bytes after it can still be decoded.

use std::path::Path;

use crate::storage::format::{
    self, DecodeError, FILE_HEADER_SIZE, FileHeader, FileKind, HEADER_BASE_OFFSET_POS,
    HEADER_CRC_POS, HEADER_FLAGS_POS, HEADER_VERSION_POS, SUPPORTED_VERSIONS,
};

use super::problem::{Problem, ProblemKind};

/// What the header of a file says, and what can be done with the rest.
#[derive(Clone, Debug)]
pub struct HeaderCheck {
    /// Whether the bytes after the header can be decoded with this build's
    /// layout. False when the file is shorter than a header, is another kind
    /// of file, or is of a version this build does not know; true for a
    /// header damaged in a way that leaves the layout known (a flipped bit),
    /// so that the records after it are still shown.
    pub body_decodable: bool,
    /// Base offset to decode the records with: the header's when it
    /// decodes, else the file name's, else the raw header field.
    pub base_offset: u64,
    /// What is wrong with the header.
    pub problem: Option<Problem>,
}

/// Checks the header of `bytes`, the whole file at `path`, which should be
/// a `kind` file whose name says `name_base` (when its name is a segment name).
pub fn check(bytes: &[u8], path: &Path, kind: FileKind, name_base: Option<u64>) -> HeaderCheck {
    let raw_version = read_u16(bytes, HEADER_VERSION_POS);
    let raw_base = read_u64(bytes, HEADER_BASE_OFFSET_POS);
    let layout_known = raw_version.is_some_and(|v| SUPPORTED_VERSIONS.contains(&v));
    let fallback_base = name_base.or(raw_base).unwrap_or(0);
    let error = match format::decode_header(bytes) {
        Ok(header) => return check_decoded(header, path, kind, name_base),
        Err(error) => error,
    };
    let (position, message, body_decodable) = match &error {
        DecodeError::Truncated { available, .. } => (
            0,
            format!(
                "the file is {available} bytes, shorter than the {FILE_HEADER_SIZE}-byte header: \
                 created and not written yet (a running node writes it with the first records), \
                 or left so by a crash"
            ),
            false,
        ),
        DecodeError::Zeroed => (
            0,
            "the header is all zero bytes: allocated but never written".to_string(),
            bytes
                .get(FILE_HEADER_SIZE..)
                .is_some_and(|body| body.iter().any(|&b| b != 0)),
        ),
        DecodeError::BadMagic { found } => (
            0,
            format!(
                "unknown magic \"{}\", where {} file starts with \"{}\"{}",
                found.escape_ascii(),
                with_article(kind),
                kind.magic().escape_ascii(),
                match raw_version {
                    Some(v) if layout_known => format!("; decoding the rest as version {v} anyway"),
                    _ => ": not a seglog file, or damaged beyond decoding".to_string(),
                }
            ),
            layout_known,
        ),
        DecodeError::UnsupportedVersion { found } => (
            HEADER_VERSION_POS as u64,
            format!(
                "format version {found} is not one this build reads ({}): the rest of the file \
                 is not decoded",
                versions()
            ),
            false,
        ),
        DecodeError::ChecksumMismatch { expected, got } => (
            HEADER_CRC_POS as u64,
            match raw_version {
                Some(v) if layout_known => format!(
                    "header CRC mismatch: stored {expected:#010x}, computed {got:#010x}; \
                     decoding the rest as version {v} anyway"
                ),
                Some(v) => format!(
                    "header CRC mismatch: stored {expected:#010x}, computed {got:#010x}, and its \
                     version field says {v}, which this build does not read ({}): the rest of \
                     the file is not decoded",
                    versions()
                ),
                None => {
                    format!("header CRC mismatch: stored {expected:#010x}, computed {got:#010x}")
                }
            },
            layout_known,
        ),
        DecodeError::BadFlags { found } => (
            HEADER_FLAGS_POS as u64,
            format!(
                "unknown header flags {found:#06x} (version 1 writes 0); decoding the rest anyway"
            ),
            true,
        ),
        DecodeError::LengthTooLarge { .. }
        | DecodeError::EmptyPayload
        | DecodeError::BadBatch { .. }
        | DecodeError::BadEntry { .. } => (0, format!("header: {error}"), false),
    };
    HeaderCheck {
        body_decodable,
        base_offset: fallback_base,
        problem: Some(Problem::at(
            ProblemKind::of_header_error(&error),
            path,
            position,
            message,
        )),
    }
}

/// The checks left once a header decodes: its kind and its base offset.
fn check_decoded(
    header: FileHeader,
    path: &Path,
    kind: FileKind,
    name_base: Option<u64>,
) -> HeaderCheck {
    if header.kind != kind {
        return HeaderCheck {
            body_decodable: false,
            base_offset: header.base_offset,
            problem: Some(Problem::at(
                ProblemKind::WrongFileKind,
                path,
                0,
                format!(
                    "this is {} file, not {} file",
                    with_article(header.kind),
                    with_article(kind)
                ),
            )),
        };
    }
    let problem = name_base
        .filter(|&name_base| name_base != header.base_offset)
        .map(|name_base| {
            Problem::at(
                ProblemKind::BaseOffsetMismatch,
                path,
                HEADER_BASE_OFFSET_POS as u64,
                format!(
                    "the header says base offset {}, the file name says {name_base}",
                    header.base_offset
                ),
            )
        });
    HeaderCheck {
        body_decodable: true,
        base_offset: header.base_offset,
        problem,
    }
}

/// A kind of file with its article, for messages.
fn with_article(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Log => "a .log",
        FileKind::Index => "an .index",
        FileKind::TimeIndex => "a .timeindex",
        FileKind::Offsets => "an offsets journal",
        FileKind::Journal => "a write-ahead journal file",
        FileKind::Checkpoint => "a checkpoint",
    }
}

/// The versions this build reads, for messages.
fn versions() -> String {
    let list: Vec<String> = SUPPORTED_VERSIONS.iter().map(u16::to_string).collect();
    format!("it reads version {}", list.join(", "))
}

/// A little-endian `u16` at `pos`, if the bytes reach that far.
pub fn read_u16(bytes: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(pos..pos + 2)?.try_into().ok()?,
    ))
}

/// A little-endian `u32` at `pos`, if the bytes reach that far.
pub fn read_u32(bytes: &[u8], pos: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(pos..pos + 4)?.try_into().ok()?,
    ))
}

/// A little-endian `u64` at `pos`, if the bytes reach that far.
pub fn read_u64(bytes: &[u8], pos: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(pos..pos + 8)?.try_into().ok()?,
    ))
}
