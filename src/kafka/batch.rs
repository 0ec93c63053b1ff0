//! Record batches (magic 2), decoded from Produce and encoded for Fetch.
//!
//! Written here rather than taken from kafka-protocol's
//! `RecordBatchDecoder`/`RecordBatchEncoder`: their `Record` keeps headers
//! in a map, so two headers of one name (which Kafka allows, and tracing
//! libraries use) would collapse into one. Everything else comes from the
//! crate: the messages around the batches and the decompression codecs.
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

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

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
    pub producer_id: i64,
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

/// Decodes every batch of a partition's `records` field. Any flaw (a bad
/// CRC, a magic other than 2, a length or count that does not add up, a
/// codec error) fails the whole field.
pub fn decode(bytes: &Bytes) -> Result<Vec<Batch>, String> {
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
        batches.push(decode_one(&batch)?);
        at = end;
    }
    Ok(batches)
}

fn decode_one(batch: &Bytes) -> Result<Batch, String> {
    let mut r = Reader {
        bytes: batch,
        position: 0,
    };
    let base_offset = i64::from_be_bytes(r.array("base offset")?);
    let _length = r.array::<4>("batch length")?;
    let _epoch = r.array::<4>("leader epoch")?;
    let magic = r.array::<1>("magic")?[0];
    if magic != 2 {
        return Err(format!(
            "a batch of magic {magic}; only 2 (Kafka 0.11 and later) is taken"
        ));
    }
    let crc = u32::from_be_bytes(r.array("CRC")?);
    let actual = crc32c::crc32c(&batch[CRC_START..]);
    if crc != actual {
        return Err(format!(
            "a batch whose CRC-32C is {crc:#010x}, not {actual:#010x}"
        ));
    }
    let attributes = i16::from_be_bytes(r.array("attributes")?);
    let _last_delta = r.array::<4>("last offset delta")?;
    let base_timestamp = i64::from_be_bytes(r.array("base timestamp")?);
    let _max_timestamp = r.array::<8>("max timestamp")?;
    let producer_id = i64::from_be_bytes(r.array("producer id")?);
    let _producer_epoch = r.array::<2>("producer epoch")?;
    let _base_sequence = r.array::<4>("base sequence")?;
    let count = i32::from_be_bytes(r.array("record count")?);
    let mut compressed = batch.slice(BATCH_HEADER_BYTES..);
    let keep = |b: &mut Bytes| Ok(b.clone());
    let records = match attributes & COMPRESSION_MASK {
        0 => Ok(compressed),
        1 => Gzip::decompress(&mut compressed, keep),
        2 => Snappy::decompress(&mut compressed, keep),
        3 => Lz4::decompress(&mut compressed, keep),
        4 => Zstd::decompress(&mut compressed, keep),
        other => {
            return Err(format!(
                "compression codec {other}, which Kafka does not have"
            ));
        }
    }
    .map_err(|e| format!("the batch does not decompress: {e:#}"))?;
    // Each record takes at least 7 bytes: a count past that is refused
    // before anything is allocated for it.
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= records.len() / 7 + 1)
        .ok_or_else(|| {
            format!(
                "a record count of {count} for {} bytes of records",
                records.len()
            )
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
                .ok_or_else(|| "a null header name".to_string())?;
            headers.push((name, r.nullable("header value")?));
        }
        if i64::try_from(r.position - start) != Ok(length) {
            return Err(format!(
                "a record of length {length} whose fields take {}",
                r.position - start
            ));
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
        return Err(format!(
            "{} bytes after the batch's {count} records",
            records.len() - r.position
        ));
    }
    Ok(Batch {
        transactional: attributes & TRANSACTIONAL != 0,
        control: attributes & CONTROL != 0,
        producer_id,
        records: out,
    })
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
