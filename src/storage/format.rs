//! Byte layout and codecs of every file seglog writes, without any I/O.
//!
//! `segment-format.md` is the specification; the constants here are tested
//! against the numbers written there (`tests/storage/spec.rs`). All integers
//! are little-endian.

/// Version of the on-disk format written by this build. Readers accept
/// exactly the versions listed in [`SUPPORTED_VERSIONS`].
///
/// Version 3 added the journal's log-start and removed entry kinds: a
/// version 2 build would take a batch holding one for a torn tail and cut
/// it (then replay records retention deleted, and drop segments holding
/// acknowledged records after them), so every file version 3 creates says
/// 3 and version 2 builds refuse them.
///
/// Version 4 lets a record's payload be a Kafka record (binary, tag byte
/// 0x01) besides JSON text: a version 3 build would serve such a payload
/// as JSON, so it must refuse a store that may hold one.
///
/// Version 5 lets a commit carry a value (a Kafka consumer's metadata, a
/// producer's state) and be removed: journal commits with data, the
/// uncommitted entry kind, and offsets entries with flags, key and value. A
/// version 4 build would take a batch holding one for a torn tail, or read
/// an offsets entry's flags as its key.
pub const FORMAT_VERSION: u16 = 5;
/// Versions this build can read. Version 1 files (no journal) differ from
/// version 2 ones only in the header's version field; a version 1 store is
/// converted when it is opened, and a version 2 or 3 one continues in a
/// new journal file of the current version (see `segment-format.md`).
/// Segment, index and checkpoint layouts are the same in all five; an
/// offsets entry has a payload of flags, key and value from version 5.
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2, 3, 4, 5];

/// Magic at the start of a segment's `.log` file.
pub const LOG_MAGIC: [u8; 8] = *b"SGLGLOG\0";
/// Magic at the start of a segment's `.index` file.
pub const INDEX_MAGIC: [u8; 8] = *b"SGLGIDX\0";
/// Magic at the start of a segment's `.timeindex` file.
pub const TIME_INDEX_MAGIC: [u8; 8] = *b"SGLGTIX\0";
/// Magic at the start of the committed-offsets journal.
pub const OFFSETS_MAGIC: [u8; 8] = *b"SGLGOFS\0";
/// Magic at the start of a write-ahead journal file (version 2).
pub const JOURNAL_MAGIC: [u8; 8] = *b"SGLGWAL\0";
/// Magic at the start of the checkpoint file (version 2).
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SGLGCKP\0";

// File header: magic, version, flags, base offset, CRC of the bytes before it.
pub const HEADER_MAGIC_POS: usize = 0;
pub const HEADER_VERSION_POS: usize = HEADER_MAGIC_POS + 8;
pub const HEADER_FLAGS_POS: usize = HEADER_VERSION_POS + 2;
pub const HEADER_BASE_OFFSET_POS: usize = HEADER_FLAGS_POS + 2;
pub const HEADER_CRC_POS: usize = HEADER_BASE_OFFSET_POS + 8;
/// Size of the header that starts every file.
pub const FILE_HEADER_SIZE: usize = HEADER_CRC_POS + 4;

// Record frame: length, CRC, offset, then `length` bytes of payload.
pub const RECORD_LENGTH_POS: usize = 0;
pub const RECORD_CRC_POS: usize = RECORD_LENGTH_POS + 4;
pub const RECORD_OFFSET_POS: usize = RECORD_CRC_POS + 4;
/// Size of the frame header before each record's payload.
pub const RECORD_HEADER_SIZE: usize = RECORD_OFFSET_POS + 8;

/// Largest message payload. Maelstrom sends small integers; 1 MiB leaves room
/// for real JSON documents while keeping one record far below a segment, and
/// makes a garbage length field (a torn tail) fail fast instead of making
/// recovery look past the end of the file.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;

// Index entry: offset relative to the segment's base offset, file position.
pub const INDEX_RELATIVE_OFFSET_POS: usize = 0;
pub const INDEX_POSITION_POS: usize = INDEX_RELATIVE_OFFSET_POS + 4;
/// Size of one sparse-index entry.
pub const INDEX_ENTRY_SIZE: usize = INDEX_POSITION_POS + 4;

// Time index entry: the largest timestamp among a chunk's records, the
// chunk's first record's offset relative to the segment's base offset, and
// a CRC of both. Unlike an offset-index entry, which every use checks
// against the record it names, an entry is trusted for the chunks a search
// skips, so a flipped bit must not pass for a timestamp.
pub const TIME_ENTRY_TIMESTAMP_POS: usize = 0;
pub const TIME_ENTRY_RELATIVE_OFFSET_POS: usize = TIME_ENTRY_TIMESTAMP_POS + 8;
pub const TIME_ENTRY_CRC_POS: usize = TIME_ENTRY_RELATIVE_OFFSET_POS + 4;
/// Size of one time-index entry.
pub const TIME_INDEX_ENTRY_SIZE: usize = TIME_ENTRY_CRC_POS + 4;
/// The timestamp of a time-index entry whose chunk holds no record with a
/// timestamp. Record timestamps are never negative.
pub const NO_TIMESTAMP: i64 = -1;

/// Which kind of file a header belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Log,
    Index,
    TimeIndex,
    Offsets,
    Journal,
    Checkpoint,
}

impl FileKind {
    /// The magic number that starts a file of this kind.
    pub fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Log => LOG_MAGIC,
            FileKind::Index => INDEX_MAGIC,
            FileKind::TimeIndex => TIME_INDEX_MAGIC,
            FileKind::Offsets => OFFSETS_MAGIC,
            FileKind::Journal => JOURNAL_MAGIC,
            FileKind::Checkpoint => CHECKPOINT_MAGIC,
        }
    }

    /// Identifies a file by its magic number.
    pub fn from_magic(magic: &[u8]) -> Option<FileKind> {
        [
            FileKind::Log,
            FileKind::Index,
            FileKind::TimeIndex,
            FileKind::Offsets,
            FileKind::Journal,
            FileKind::Checkpoint,
        ]
        .into_iter()
        .find(|kind| kind.magic() == magic)
    }
}

/// The decoded header of a `.log`, `.index` or offsets file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    pub kind: FileKind,
    pub version: u16,
    /// First offset of the segment (`.log`, `.index`, `.timeindex`); 0 for the offsets
    /// journal; the file's sequence number for a write-ahead journal file;
    /// the first live journal file's sequence number for the checkpoint.
    pub base_offset: u64,
}

/// Why a header or record does not decode; the caller adds file and position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs: a torn write or a short file.
    Truncated {
        needed: usize,
        available: usize,
    },
    /// Every byte is zero: space that was allocated but never written.
    Zeroed,
    BadMagic {
        found: [u8; 8],
    },
    UnsupportedVersion {
        found: u16,
    },
    BadFlags {
        found: u16,
    },
    ChecksumMismatch {
        expected: u32,
        got: u32,
    },
    /// A record length field larger than [`MESSAGE_BYTES_MAX`].
    LengthTooLarge {
        length: u32,
    },
    /// A log record with no payload: a message is never empty.
    EmptyPayload,
    /// A journal batch whose CRC matches but whose entries break a rule of
    /// the format (an unknown kind, a count that disagrees with the frames):
    /// written by something other than seglog, or by a bug.
    BadBatch {
        why: String,
    },
    /// An entry of the committed offsets file whose CRC matches but whose
    /// fields break a rule of the format (unknown flags, a key length past
    /// the entry): written by something other than seglog, or by a bug.
    BadEntry {
        why: String,
    },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(f, "torn: needs {needed} bytes, {available} present")
            }
            DecodeError::Zeroed => write!(f, "zero-filled bytes, never written"),
            DecodeError::BadMagic { found } => write!(f, "unknown magic {found:02x?}"),
            DecodeError::UnsupportedVersion { found } => {
                write!(f, "unsupported format version {found}")
            }
            DecodeError::BadFlags { found } => write!(f, "unknown flags {found:#06x}"),
            DecodeError::ChecksumMismatch { expected, got } => {
                write!(
                    f,
                    "CRC mismatch: stored {expected:#010x}, computed {got:#010x}"
                )
            }
            DecodeError::EmptyPayload => write!(f, "empty record: a message is never empty"),
            DecodeError::LengthTooLarge { length } => write!(
                f,
                "record length {length} exceeds the maximum of {MESSAGE_BYTES_MAX}"
            ),
            DecodeError::BadBatch { why } => write!(f, "malformed journal batch: {why}"),
            DecodeError::BadEntry { why } => write!(f, "malformed committed offset entry: {why}"),
        }
    }
}

pub(crate) fn u16_at(bytes: &[u8], pos: usize) -> u16 {
    let mut raw = [0u8; 2];
    raw.copy_from_slice(&bytes[pos..pos + 2]);
    u16::from_le_bytes(raw)
}

pub(crate) fn u32_at(bytes: &[u8], pos: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[pos..pos + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn u64_at(bytes: &[u8], pos: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[pos..pos + 8]);
    u64::from_le_bytes(raw)
}

/// Encodes a file header.
pub fn encode_header(header: &FileHeader) -> [u8; FILE_HEADER_SIZE] {
    let mut out = [0u8; FILE_HEADER_SIZE];
    out[HEADER_MAGIC_POS..HEADER_VERSION_POS].copy_from_slice(&header.kind.magic());
    out[HEADER_VERSION_POS..HEADER_FLAGS_POS].copy_from_slice(&header.version.to_le_bytes());
    // Flags are reserved: version 1 writes zero and rejects anything else.
    out[HEADER_BASE_OFFSET_POS..HEADER_CRC_POS].copy_from_slice(&header.base_offset.to_le_bytes());
    let crc = crc32fast::hash(&out[..HEADER_CRC_POS]);
    out[HEADER_CRC_POS..FILE_HEADER_SIZE].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes and checks a file header from the start of `bytes`.
pub fn decode_header(bytes: &[u8]) -> Result<FileHeader, DecodeError> {
    if bytes.len() < FILE_HEADER_SIZE {
        return Err(DecodeError::Truncated {
            needed: FILE_HEADER_SIZE,
            available: bytes.len(),
        });
    }
    let bytes = &bytes[..FILE_HEADER_SIZE];
    if bytes.iter().all(|&b| b == 0) {
        return Err(DecodeError::Zeroed);
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[HEADER_MAGIC_POS..HEADER_VERSION_POS]);
    let kind = FileKind::from_magic(&magic).ok_or(DecodeError::BadMagic { found: magic })?;
    let expected = u32_at(bytes, HEADER_CRC_POS);
    let got = crc32fast::hash(&bytes[..HEADER_CRC_POS]);
    if expected != got {
        return Err(DecodeError::ChecksumMismatch { expected, got });
    }
    let version = u16_at(bytes, HEADER_VERSION_POS);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let flags = u16_at(bytes, HEADER_FLAGS_POS);
    if flags != 0 {
        return Err(DecodeError::BadFlags { found: flags });
    }
    Ok(FileHeader {
        kind,
        version,
        base_offset: u64_at(bytes, HEADER_BASE_OFFSET_POS),
    })
}

/// Total bytes a record with a payload of `payload_len` bytes occupies.
pub fn record_size(payload_len: usize) -> usize {
    RECORD_HEADER_SIZE + payload_len
}

/// CRC-32/IEEE of a record frame: over the length field and everything after
/// the CRC field (offset and payload), so the CRC field itself is the only
/// part of a record it does not cover. `frame` is the whole record.
fn record_crc(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[RECORD_LENGTH_POS..RECORD_CRC_POS]);
    hasher.update(&frame[RECORD_OFFSET_POS..]);
    hasher.finalize()
}

/// Appends the frame of one record to `out`.
///
/// The caller has checked `payload.len() <= MESSAGE_BYTES_MAX`; a longer
/// payload is a bug in the caller.
pub fn encode_record(out: &mut Vec<u8>, offset: u64, payload: &[u8]) {
    assert!(payload.len() <= MESSAGE_BYTES_MAX, "payload over the limit");
    let start = out.len();
    out.reserve(record_size(payload.len()));
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = record_crc(&out[start..]);
    out[start + RECORD_CRC_POS..start + RECORD_OFFSET_POS].copy_from_slice(&crc.to_le_bytes());
}

/// One record decoded in place from a byte slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: u64,
    pub crc: u32,
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Bytes the record occupies on disk, frame included.
    pub fn size(&self) -> usize {
        record_size(self.payload.len())
    }
}

/// Decodes the record that starts at the beginning of `bytes` and verifies its CRC.
///
/// The offset is returned, not checked: whether it is the expected one is the
/// caller's business (a log wants consecutive offsets; the offsets journal
/// stores committed offsets in that field).
pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    if bytes.len() < RECORD_HEADER_SIZE {
        return Err(DecodeError::Truncated {
            needed: RECORD_HEADER_SIZE,
            available: bytes.len(),
        });
    }
    let length = u32_at(bytes, RECORD_LENGTH_POS);
    let crc = u32_at(bytes, RECORD_CRC_POS);
    let offset = u64_at(bytes, RECORD_OFFSET_POS);
    if length as usize > MESSAGE_BYTES_MAX {
        return Err(DecodeError::LengthTooLarge { length });
    }
    let end = RECORD_HEADER_SIZE + length as usize;
    if bytes.len() < end {
        return Err(DecodeError::Truncated {
            needed: end,
            available: bytes.len(),
        });
    }
    let payload = &bytes[RECORD_HEADER_SIZE..end];
    let got = record_crc(&bytes[..end]);
    if got != crc {
        if crc == 0 && offset == 0 && length == 0 {
            return Err(DecodeError::Zeroed);
        }
        return Err(DecodeError::ChecksumMismatch { expected: crc, got });
    }
    Ok(Record {
        offset,
        crc,
        payload,
    })
}

/// Decodes a record of a `.log` file: [`decode_record`], and the payload
/// must not be empty (messages are JSON text, never empty; the offsets
/// journal, whose keys may be empty, uses [`decode_record`]).
pub fn decode_log_record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    let record = decode_record(bytes)?;
    if record.payload.is_empty() {
        return Err(DecodeError::EmptyPayload);
    }
    Ok(record)
}

/// One entry of a segment's sparse index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record minus the segment's base offset.
    pub relative_offset: u32,
    /// Position of the record's frame in the `.log` file.
    pub position: u32,
}

/// Encodes one index entry.
pub fn encode_index_entry(entry: IndexEntry) -> [u8; INDEX_ENTRY_SIZE] {
    let mut out = [0u8; INDEX_ENTRY_SIZE];
    out[INDEX_RELATIVE_OFFSET_POS..INDEX_POSITION_POS]
        .copy_from_slice(&entry.relative_offset.to_le_bytes());
    out[INDEX_POSITION_POS..INDEX_ENTRY_SIZE].copy_from_slice(&entry.position.to_le_bytes());
    out
}

/// Decodes the index entries that follow an index file's header. A trailing
/// partial entry is reported as `Truncated`.
pub fn decode_index_entries(bytes: &[u8]) -> Result<Vec<IndexEntry>, DecodeError> {
    check_whole_entries(bytes, INDEX_ENTRY_SIZE)?;
    Ok(bytes
        .chunks_exact(INDEX_ENTRY_SIZE)
        .map(|raw| IndexEntry {
            relative_offset: u32_at(raw, INDEX_RELATIVE_OFFSET_POS),
            position: u32_at(raw, INDEX_POSITION_POS),
        })
        .collect())
}

/// `Truncated` unless `bytes` are whole entries of `entry_size` bytes.
fn check_whole_entries(bytes: &[u8], entry_size: usize) -> Result<(), DecodeError> {
    if bytes.len().is_multiple_of(entry_size) {
        return Ok(());
    }
    Err(DecodeError::Truncated {
        needed: bytes.len().next_multiple_of(entry_size),
        available: bytes.len(),
    })
}

/// One entry of a segment's time index: the largest timestamp of one
/// chunk's records (see `storage/timeindex.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp of the chunk's records, or [`NO_TIMESTAMP`].
    pub timestamp: i64,
    /// Offset of the chunk's first record minus the segment's base offset.
    pub relative_offset: u32,
}

/// Encodes one time-index entry.
pub fn encode_time_entry(entry: TimeEntry) -> [u8; TIME_INDEX_ENTRY_SIZE] {
    let mut out = [0u8; TIME_INDEX_ENTRY_SIZE];
    out[TIME_ENTRY_TIMESTAMP_POS..TIME_ENTRY_RELATIVE_OFFSET_POS]
        .copy_from_slice(&entry.timestamp.to_le_bytes());
    out[TIME_ENTRY_RELATIVE_OFFSET_POS..TIME_ENTRY_CRC_POS]
        .copy_from_slice(&entry.relative_offset.to_le_bytes());
    let crc = crc32fast::hash(&out[..TIME_ENTRY_CRC_POS]);
    out[TIME_ENTRY_CRC_POS..TIME_INDEX_ENTRY_SIZE].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes the entries that follow a time index file's header. A trailing
/// partial entry is reported as `Truncated`, an entry whose CRC does not
/// match (zero-filled ones included) as `ChecksumMismatch`.
pub fn decode_time_entries(bytes: &[u8]) -> Result<Vec<TimeEntry>, DecodeError> {
    check_whole_entries(bytes, TIME_INDEX_ENTRY_SIZE)?;
    bytes
        .chunks_exact(TIME_INDEX_ENTRY_SIZE)
        .map(decode_time_entry)
        .collect()
}

/// Decodes one time-index entry of [`TIME_INDEX_ENTRY_SIZE`] bytes and
/// checks its CRC.
pub fn decode_time_entry(raw: &[u8]) -> Result<TimeEntry, DecodeError> {
    let expected = u32_at(raw, TIME_ENTRY_CRC_POS);
    let got = crc32fast::hash(&raw[..TIME_ENTRY_CRC_POS]);
    if expected != got {
        return Err(DecodeError::ChecksumMismatch { expected, got });
    }
    Ok(TimeEntry {
        timestamp: u64_at(raw, TIME_ENTRY_TIMESTAMP_POS) as i64,
        relative_offset: u32_at(raw, TIME_ENTRY_RELATIVE_OFFSET_POS),
    })
}

/// File name of the `.log` file of the segment starting at `base_offset`
/// (Kafka-style: 20 decimal digits, so names sort by offset).
pub fn log_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// File name of the `.index` file of the segment starting at `base_offset`.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.index")
}

/// File name of the `.timeindex` file of the segment starting at `base_offset`.
pub fn time_index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.timeindex")
}

/// The files of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentFile {
    Log,
    Index,
    TimeIndex,
}

/// Parses a segment file name back to its base offset and which of the
/// segment's files it is.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, SegmentFile)> {
    let (stem, file) = if let Some(stem) = name.strip_suffix(".log") {
        (stem, SegmentFile::Log)
    } else if let Some(stem) = name.strip_suffix(".timeindex") {
        (stem, SegmentFile::TimeIndex)
    } else {
        (name.strip_suffix(".index")?, SegmentFile::Index)
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = FileHeader {
            kind: FileKind::Index,
            version: FORMAT_VERSION,
            base_offset: 12345,
        };
        assert_eq!(decode_header(&encode_header(&header)), Ok(header));
    }

    #[test]
    fn time_entry_round_trips_and_rejects_any_flipped_bit_or_zeros() {
        let entry = TimeEntry {
            timestamp: 1_795_860_000_123,
            relative_offset: 4096,
        };
        let bytes = encode_time_entry(entry);
        assert_eq!(decode_time_entries(&bytes), Ok(vec![entry]));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_time_entry(&flipped).is_err(),
                "bit {bit} flip accepted"
            );
        }
        assert!(decode_time_entry(&[0; TIME_INDEX_ENTRY_SIZE]).is_err());
    }

    #[test]
    fn record_round_trips_and_rejects_any_flipped_bit() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, 42, b"{\"a\":1}");
        let record = decode_record(&bytes).expect("fresh record decodes");
        assert_eq!((record.offset, record.payload), (42, &b"{\"a\":1}"[..]));
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_record(&flipped).is_err(), "bit {bit} flip accepted");
        }
    }

    #[test]
    fn zero_filled_record_is_never_valid() {
        assert_eq!(decode_record(&[0u8; 64]), Err(DecodeError::Zeroed));
        assert_eq!(decode_header(&[0u8; 64]), Err(DecodeError::Zeroed));
    }

    #[test]
    fn segment_file_names_parse_back() {
        assert_eq!(
            parse_segment_file_name(&log_file_name(7)),
            Some((7, SegmentFile::Log))
        );
        assert_eq!(
            parse_segment_file_name(&index_file_name(u64::MAX)),
            Some((u64::MAX, SegmentFile::Index))
        );
        assert_eq!(
            parse_segment_file_name(&time_index_file_name(3)),
            Some((3, SegmentFile::TimeIndex))
        );
        assert_eq!(parse_segment_file_name("7.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.log"), None);
    }
}
