//! Record batches (magic 2), decoded from Produce and encoded for Fetch.
//!
//! Written here rather than taken from kafka-protocol's
//! `RecordBatchDecoder`/`RecordBatchEncoder`: their `Record` keeps headers
//! in a map, so two headers of one name (which Kafka allows, and tracing
//! libraries use) would collapse into one. The crate's decompressors are
//! not used either: they inflate a batch into memory without a bound, so a
//! small gzip batch of zeros could take gigabytes. Here every codec reads
//! through a reader that stops at the caller's byte budget.
//!
//! Layout (big-endian; Kafka's "Record Batch" documentation):
//!
//! ```text
//! 0  base offset        i64      27 base timestamp   i64
//! 8  batch length       i32      35 max timestamp    i64
//! 12 leader epoch       i32      43 producer id      i64
//! 16 magic (2)          i8       51 producer epoch   i16
//! 17 CRC-32C            u32      53 base sequence    i32
//! 21 attributes         i16      57 record count     i32
//! 23 last offset delta  i32      61 records (compressed as attributes say)
//! ```
//!
//! A record: length (varint), attributes (i8), timestamp delta (varlong),
//! offset delta (varint), key length (varint, -1 null) and key, value
//! length and value, header count (varint), and per header a name length
//! and name, a value length (-1 null) and value. Varints are zigzag LEB128.

use std::io::Read;

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of a batch before its records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Where the CRC-32C's range starts (the attributes), and where the batch
/// length's range starts (the leader epoch).
const CRC_START: usize = 21;
const LENGTH_START: usize = 12;
/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const TRANSACTIONAL: i16 = 1 << 4;
const CONTROL: i16 = 1 << 5;

/// One record of a batch, with its offset and timestamp made absolute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// In order, names repeated as sent.
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// One decoded batch.
#[derive(Debug)]
pub struct Batch {
    pub transactional: bool,
    pub control: bool,
    /// -1 unless the producer is idempotent.
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The first record's sequence number (-1 without a producer id).
    pub base_sequence: i32,
    pub records: Vec<BatchRecord>,
}

/// Reads big-endian integers and varints off a slice, front to back.
struct Reader<'a> {
    bytes: &'a Bytes,
    position: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<Bytes, String> {
        let end = self
            .position
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("the batch ends inside the {what} at byte {}", self.position))?;
        let taken = self.bytes.slice(self.position..end);
        self.position = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    /// A zigzag LEB128 integer of at most `max_bytes` bytes.
    fn zigzag(&mut self, max_bytes: usize, what: &str) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for i in 0..max_bytes {
            let byte = self.array::<1>(what)?[0];
            raw |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(format!("a varint over {max_bytes} bytes in the {what}"))
    }

    fn varint(&mut self, what: &str) -> Result<i64, String> {
        self.zigzag(5, what)
    }

    fn varlong(&mut self, what: &str) -> Result<i64, String> {
        self.zigzag(10, what)
    }

    /// Bytes of a varint length, -1 for null.
    fn nullable(&mut self, what: &str) -> Result<Option<Bytes>, String> {
        match self.varint(what)? {
            -1 => Ok(None),
            n if n >= 0 => self.take(n as usize, what).map(Some),
            n => Err(format!("a {what} length of {n}")),
        }
    }
}

/// Why a partition's `records` field is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A flaw: a bad CRC, a magic other than 2, a length or count that does
    /// not add up, a codec error.
    Corrupt(String),
    /// The compressed records inflate past the byte budget given.
    TooLarge { budget_bytes: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Corrupt(reason) => f.write_str(reason),
            DecodeError::TooLarge { budget_bytes } => write!(
                f,
                "compressed records that inflate past {budget_bytes} bytes \
                 (--max-request-bytes, for all of a request's batches)"
            ),
        }
    }
}

impl From<String> for DecodeError {
    fn from(reason: String) -> DecodeError {
        DecodeError::Corrupt(reason)
    }
}

/// The inflation budget of [`decode`], for callers without a request's
/// limit (the fuzzer, tests): 64 MiB is four times the default
/// `--max-request-bytes` and far below what would strain a test machine.
pub const DECODE_INFLATED_BYTES_MAX: usize = 64 << 20;

/// [`decode_within`] with a budget of [`DECODE_INFLATED_BYTES_MAX`].
pub fn decode(bytes: &Bytes) -> Result<Vec<Batch>, DecodeError> {
    decode_within(bytes, &mut DECODE_INFLATED_BYTES_MAX.clone())
}

/// Decodes every batch of a partition's `records` field. Any flaw fails
/// the whole field. Compressed records may inflate to at most
/// `*inflated_bytes_left` bytes in all, which is lowered by what they take
/// (the caller passes one budget for all of a request's batches).
pub fn decode_within(
    bytes: &Bytes,
    inflated_bytes_left: &mut usize,
) -> Result<Vec<Batch>, DecodeError> {
    let mut batches = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let mut head = Reader {
            bytes,
            position: at,
        };
        let _base = i64::from_be_bytes(head.array("base offset")?);
        let length = i32::from_be_bytes(head.array("batch length")?);
        let length = usize::try_from(length).map_err(|_| format!("a batch length of {length}"))?;
        let end = (at + LENGTH_START)
            .checked_add(length)
            .filter(|&end| end <= bytes.len() && end >= at + BATCH_HEADER_BYTES)
            .ok_or_else(|| format!("a batch length of {length} at byte {at}"))?;
        let batch = bytes.slice(at..end);
        batches.push(decode_one(&batch, inflated_bytes_left)?);
        at = end;
    }
    Ok(batches)
}

fn decode_one(batch: &Bytes, inflated_bytes_left: &mut usize) -> Result<Batch, DecodeError> {
    let mut r = Reader {
        bytes: batch,
        position: 0,
    };
    let base_offset = i64::from_be_bytes(r.array("base offset")?);
    let _length = r.array::<4>("batch length")?;
    let _epoch = r.array::<4>("leader epoch")?;
    let magic = r.array::<1>("magic")?[0];
    if magic != 2 {
        return Err(DecodeError::Corrupt(format!(
            "a batch of magic {magic}; only 2 (Kafka 0.11 and later) is taken"
        )));
    }
    let crc = u32::from_be_bytes(r.array("CRC")?);
    let actual = crc32c::crc32c(&batch[CRC_START..]);
    if crc != actual {
        return Err(DecodeError::Corrupt(format!(
            "a batch whose CRC-32C is {crc:#010x}, not {actual:#010x}"
        )));
    }
    let attributes = i16::from_be_bytes(r.array("attributes")?);
    let _last_delta = r.array::<4>("last offset delta")?;
    let base_timestamp = i64::from_be_bytes(r.array("base timestamp")?);
    let _max_timestamp = r.array::<8>("max timestamp")?;
    let producer_id = i64::from_be_bytes(r.array("producer id")?);
    let producer_epoch = i16::from_be_bytes(r.array("producer epoch")?);
    let base_sequence = i32::from_be_bytes(r.array("base sequence")?);
    let count = i32::from_be_bytes(r.array("record count")?);
    let compressed = batch.slice(BATCH_HEADER_BYTES..);
    let records = match attributes & COMPRESSION_MASK {
        0 => compressed,
        codec => {
            let records = inflate(codec, &compressed, *inflated_bytes_left)?;
            *inflated_bytes_left -= records.len();
            records
        }
    };
    // Each record takes at least 7 bytes: a count past that is refused
    // before anything is allocated for it.
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= records.len() / 7 + 1)
        .ok_or_else(|| {
            DecodeError::Corrupt(format!(
                "a record count of {count} for {} bytes of records",
                records.len()
            ))
        })?;
    let mut r = Reader {
        bytes: &records,
        position: 0,
    };
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let length = r.varint("record length")?;
        let start = r.position;
        let _attributes = r.array::<1>("record attributes")?;
        let timestamp_delta = r.varlong("timestamp delta")?;
        let offset_delta = r.varint("offset delta")?;
        let key = r.nullable("key")?;
        let value = r.nullable("value")?;
        let header_count = r.varint("header count")?;
        let header_count = usize::try_from(header_count)
            .ok()
            .filter(|&c| c <= records.len())
            .ok_or_else(|| format!("a header count of {header_count}"))?;
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let name = r
                .nullable("header name")?
                .ok_or_else(|| DecodeError::Corrupt("a null header name".into()))?;
            headers.push((name, r.nullable("header value")?));
        }
        if i64::try_from(r.position - start) != Ok(length) {
            return Err(DecodeError::Corrupt(format!(
                "a record of length {length} whose fields take {}",
                r.position - start
            )));
        }
        out.push(BatchRecord {
            offset: base_offset.wrapping_add(offset_delta),
            timestamp: base_timestamp.wrapping_add(timestamp_delta),
            key,
            value,
            headers,
        });
    }
    if r.position != records.len() {
        return Err(DecodeError::Corrupt(format!(
            "{} bytes after the batch's {count} records",
            records.len() - r.position
        )));
    }
    Ok(Batch {
        transactional: attributes & TRANSACTIONAL != 0,
        control: attributes & CONTROL != 0,
        producer_id,
        producer_epoch,
        base_sequence,
        records: out,
    })
}

/// The xerial framing (snappy-java's stream format) that Kafka's Java
/// clients write around snappy blocks; without it the bytes are one raw
/// snappy block.
const SNAPPY_XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Decompresses a batch's records with Kafka codec `codec` (1 gzip, 2
/// snappy, 3 lz4 frame, 4 zstd), refusing them once they pass
/// `budget_bytes`: nothing past the budget (plus one read's worth) is
/// ever allocated.
fn inflate(codec: i16, compressed: &[u8], budget_bytes: usize) -> Result<Bytes, DecodeError> {
    let corrupt = |e: std::io::Error| {
        DecodeError::Corrupt(format!(
            "the batch does not decompress (codec {codec}): {e}"
        ))
    };
    let too_large = DecodeError::TooLarge { budget_bytes };
    if codec == 2 {
        return inflate_snappy(compressed, budget_bytes);
    }
    let reader: Box<dyn Read + '_> = match codec {
        1 => Box::new(flate2::read::GzDecoder::new(compressed)),
        3 => Box::new(lz4::Decoder::new(compressed).map_err(corrupt)?),
        4 => Box::new(zstd::stream::read::Decoder::new(compressed).map_err(corrupt)?),
        other => {
            return Err(DecodeError::Corrupt(format!(
                "compression codec {other}, which Kafka does not have"
            )));
        }
    };
    // One byte past the budget tells a stream that fits exactly from one
    // that does not.
    let mut out = Vec::new();
    reader
        .take((budget_bytes as u64).saturating_add(1))
        .read_to_end(&mut out)
        .map_err(corrupt)?;
    if out.len() > budget_bytes {
        return Err(too_large);
    }
    Ok(Bytes::from(out))
}

/// Snappy, raw or in xerial blocks; each block's stated length is checked
/// against what is left of the budget before room is made for it.
fn inflate_snappy(compressed: &[u8], budget_bytes: usize) -> Result<Bytes, DecodeError> {
    let corrupt = |e: snap::Error| {
        DecodeError::Corrupt(format!("the batch does not decompress (snappy): {e}"))
    };
    let too_large = DecodeError::TooLarge { budget_bytes };
    let Some(mut rest) = compressed.strip_prefix(&SNAPPY_XERIAL_MAGIC[..]) else {
        let length = snap::raw::decompress_len(compressed).map_err(corrupt)?;
        if length > budget_bytes {
            return Err(too_large);
        }
        let mut out = vec![0; length];
        let written = snap::raw::Decoder::new()
            .decompress(compressed, &mut out)
            .map_err(corrupt)?;
        out.truncate(written);
        return Ok(Bytes::from(out));
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (size, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| DecodeError::Corrupt("a snappy block cut in its length".into()))?;
        let size = u32::from_be_bytes(*size) as usize;
        let block = after.get(..size).ok_or_else(|| {
            DecodeError::Corrupt(format!("a snappy block of {size} bytes cut short"))
        })?;
        rest = &after[size..];
        let length = snap::raw::decompress_len(block).map_err(corrupt)?;
        if length > budget_bytes - out.len() {
            return Err(too_large);
        }
        let start = out.len();
        out.resize(start + length, 0);
        let written = snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(corrupt)?;
        out.truncate(start + written);
    }
    Ok(Bytes::from(out))
}

fn put_zigzag(out: &mut BytesMut, value: i64) {
    let mut raw = ((value << 1) ^ (value >> 63)) as u64;
    while raw >= 0x80 {
        out.put_u8((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.put_u8(raw as u8);
}

fn put_nullable(out: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        None => put_zigzag(out, -1),
        Some(bytes) => {
            put_zigzag(out, bytes.len() as i64);
            out.put_slice(bytes);
        }
    }
}

/// Appends one uncompressed batch holding `records` (consecutive offsets,
/// as a partition's are), with no producer id, leader epoch 0 and
/// CreateTime timestamps.
pub fn encode(out: &mut BytesMut, records: &[BatchRecord]) {
    let Some(first) = records.first() else {
        return;
    };
    let base_offset = first.offset;
    let base_timestamp = records.iter().map(|r| r.timestamp).min().unwrap_or(-1);
    let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap_or(-1);
    let start = out.len();
    out.put_i64(base_offset);
    out.put_i32(0); // batch length, filled below
    out.put_i32(0); // leader epoch
    out.put_i8(2);
    out.put_u32(0); // CRC, filled below
    out.put_i16(0); // attributes: no compression, CreateTime
    let last = records.last().map_or(base_offset, |r| r.offset);
    out.put_i32((last - base_offset) as i32);
    out.put_i64(base_timestamp);
    out.put_i64(max_timestamp);
    out.put_i64(-1); // producer id
    out.put_i16(-1); // producer epoch
    out.put_i32(-1); // base sequence
    out.put_i32(records.len() as i32);
    let mut body = BytesMut::new();
    for record in records {
        body.clear();
        body.put_i8(0);
        put_zigzag(&mut body, record.timestamp - base_timestamp);
        put_zigzag(&mut body, record.offset - base_offset);
        put_nullable(&mut body, record.key.as_deref());
        put_nullable(&mut body, record.value.as_deref());
        put_zigzag(&mut body, record.headers.len() as i64);
        for (name, value) in &record.headers {
            put_nullable(&mut body, Some(name));
            put_nullable(&mut body, value.as_deref());
        }
        put_zigzag(out, body.len() as i64);
        out.put_slice(&body);
    }
    let length = (out.len() - start - LENGTH_START) as i32;
    out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn sample() -> Vec<BatchRecord> {
        (0..5)
            .map(|i| BatchRecord {
                offset: 100 + i,
                timestamp: 1_700_000_000_000 + i * 3,
                key: (i % 2 == 0).then(|| Bytes::from(vec![i as u8, 0, 255])),
                value: (i != 3).then(|| Bytes::from(format!("value {i}"))),
                headers: vec![
                    (Bytes::from_static(b"h"), Some(Bytes::from_static(b"1"))),
                    (Bytes::from_static(b"h"), None),
                    (Bytes::from_static(b""), Some(Bytes::new())),
                ],
            })
            .collect()
    }

    #[test]
    fn batches_round_trip_with_repeated_headers() {
        let records = sample();
        let mut out = BytesMut::new();
        encode(&mut out, &records);
        encode(&mut out, &records[..1]);
        let batches = decode(&out.freeze()).expect("decodes");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].records, records);
        assert_eq!(batches[1].records, records[..1]);
    }

    #[test]
    fn the_crates_decoder_reads_what_this_encodes() {
        let mut out = BytesMut::new();
        encode(&mut out, &sample());
        let sets =
            RecordBatchDecoder::decode_all(&mut out.freeze()).expect("kafka-protocol decodes");
        let records = &sets[0].records;
        assert_eq!(records.len(), 5);
        assert_eq!(records[4].offset, 104);
        assert_eq!(records[4].timestamp, 1_700_000_000_012);
        assert_eq!(records[3].value, None);
    }

    #[test]
    fn what_the_crate_encodes_decodes_here_compressed_or_not() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: -1,
                timestamp: 50 + i,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from(vec![b'v'; 100])),
                headers: IndexMap::from([(
                    StrBytes::from_static_str("a"),
                    Some(Bytes::from_static(b"b")),
                )]),
            })
            .collect();
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut out = BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut out, &records, &options).expect("encodes");
            // The crate may put the records in batches of its choosing.
            let got: Vec<BatchRecord> = decode(&out.freeze())
                .expect("decodes")
                .into_iter()
                .flat_map(|b| b.records)
                .collect();
            assert_eq!(got.len(), 3, "{compression:?}");
            assert_eq!(got[2].timestamp, 52);
            assert_eq!(got[2].value.as_deref(), Some(&[b'v'; 100][..]));
            assert_eq!(
                got[1].headers,
                vec![(Bytes::from_static(b"a"), Some(Bytes::from_static(b"b")))]
            );
        }
    }

    /// Regression (decompression bomb): every codec stops at the budget;
    /// a stream that fits it exactly inflates whole.
    #[test]
    fn every_codec_stops_at_the_inflation_budget() {
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let plain = vec![0u8; 1 << 20];
        for codec in 1..=4i16 {
            let mut compressed = BytesMut::new();
            match codec {
                1 => Gzip::compress(&mut compressed, |b: &mut BytesMut| {
                    b.extend_from_slice(&plain);
                    Ok(())
                }),
                2 => Snappy::compress(&mut compressed, |b: &mut BytesMut| {
                    b.extend_from_slice(&plain);
                    Ok(())
                }),
                3 => Lz4::compress(&mut compressed, |b: &mut BytesMut| {
                    b.extend_from_slice(&plain);
                    Ok(())
                }),
                _ => Zstd::compress(&mut compressed, |b: &mut BytesMut| {
                    b.extend_from_slice(&plain);
                    Ok(())
                }),
            }
            .expect("compresses");
            assert_eq!(
                inflate(codec, &compressed, plain.len() - 1),
                Err(DecodeError::TooLarge {
                    budget_bytes: plain.len() - 1
                }),
                "codec {codec}"
            );
            let whole = inflate(codec, &compressed, plain.len()).expect("fits");
            assert_eq!(whole.len(), plain.len(), "codec {codec}");
        }
        // Raw snappy (no xerial framing) states its length up front.
        let raw = snap::raw::Encoder::new()
            .compress_vec(&plain)
            .expect("compresses");
        assert!(matches!(
            inflate(2, &raw, 1000),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(
            inflate(2, &raw, plain.len()).expect("fits").len(),
            plain.len()
        );
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_refused() {
        let mut out = BytesMut::new();
        encode(&mut out, &sample());
        let whole = out.freeze();
        for cut in 1..whole.len() {
            assert!(decode(&whole.slice(..cut)).is_err(), "cut at {cut}");
        }
        for at in 0..whole.len() {
            let mut bad = whole.to_vec();
            bad[at] ^= 0x40;
            // The base offset and the leader epoch are outside the CRC
            // (as in Kafka) and any value of theirs is valid.
            if at < 8 || (12..16).contains(&at) {
                continue;
            }
            assert!(decode(&Bytes::from(bad)).is_err(), "flip at {at}");
        }
    }

    proptest::proptest! {
        /// Client bytes never panic the decoder, whether garbage or a
        /// valid batch with bytes overwritten (the CRC then fails, so the
        /// mutation is also made after the CRC is fixed up).
        #[test]
        fn no_bytes_panic_the_decoder(
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            at in 0usize..400,
            with in proptest::prelude::any::<u8>(),
        ) {
            let _ = decode(&Bytes::from(garbage));
            let mut out = BytesMut::new();
            encode(&mut out, &sample());
            let mut bytes = out.to_vec();
            let at = at % bytes.len();
            bytes[at] = with;
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[17..21].copy_from_slice(&crc.to_be_bytes());
            let _ = decode(&Bytes::from(bytes));
        }
    }

    /// A batch kafka-python 3.0.12's own encoder wrote (also a fuzz seed):
    /// three records with a repeated header name and a null header value.
    #[test]
    fn a_batch_another_client_encoded_decodes() {
        let bytes = Bytes::from_static(include_bytes!("../../fuzz/seeds/kafka/batch"));
        let batches = decode(&bytes).expect("decodes");
        let records = &batches[0].records;
        assert_eq!(records.len(), 3);
        assert_eq!(records[2].offset, 2);
        assert_eq!(records[2].timestamp, 1_700_000_000_002);
        assert_eq!(records[2].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(records[2].value.as_deref(), Some(&b"value 2"[..]));
        assert_eq!(
            records[2].headers,
            vec![
                (Bytes::from_static(b"h"), Some(Bytes::from_static(b"1"))),
                (Bytes::from_static(b"h"), None)
            ]
        );
        // And this encoder writes the same bytes for the same records.
        let mut again = BytesMut::new();
        encode(&mut again, records);
        assert_eq!(again.freeze(), bytes);
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
        ] {
            let mut out = BytesMut::new();
            put_zigzag(&mut out, value);
            let bytes = out.freeze();
            let mut r = Reader {
                bytes: &bytes,
                position: 0,
            };
            assert_eq!(r.varlong("test"), Ok(value));
        }
    }
}
