//! Journal files and batches from anywhere: nothing may panic, and a scan
//! never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seglog::storage::{checkpoint, journal};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(batch) = journal::decode_batch(bytes) {
        let _ = format!("{batch:?}");
    }
    if let Ok(scan) = journal::scan_file(bytes) {
        let _ = format!("{:?}", scan.stop);
        assert!(scan.whole_sync_point_batches() <= scan.batches.len());
    }
    let _ = journal::find_batch_after(bytes, 0);
    for (_, frame) in journal::frames(0, bytes).take(1000) {
        assert!(frame.len() <= bytes.len());
    }
    let _ = checkpoint::decode(bytes);
});
