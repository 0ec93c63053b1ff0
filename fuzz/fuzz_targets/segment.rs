//! Segment bytes from anywhere: headers, records, scans, index entries.
//! Nothing may panic, and whatever decodes must agree with its encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seglog::storage::{format, segment};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(header) = format::decode_header(bytes) {
        assert_eq!(
            &format::encode_header(&header)[..],
            &bytes[..format::FILE_HEADER_SIZE]
        );
    }
    if let Ok(record) = format::decode_log_record(bytes) {
        let mut again = Vec::new();
        format::encode_record(&mut again, record.offset, record.payload);
        assert_eq!(&again[..], &bytes[..record.size()]);
    }
    let base = bytes.first().copied().map_or(0, u64::from);
    let scan = segment::scan_records(bytes, base);
    assert!(scan.end_position <= (bytes.len() as u64).max(format::FILE_HEADER_SIZE as u64));
    assert!(scan.next_offset >= base);
    if scan.stop.is_some() {
        let _ = segment::find_record_after(bytes, scan.end_position, scan.next_offset);
    }
    if let Ok(entries) = format::decode_index_entries(bytes) {
        assert_eq!(entries.len() * format::INDEX_ENTRY_SIZE, bytes.len());
    }
});
