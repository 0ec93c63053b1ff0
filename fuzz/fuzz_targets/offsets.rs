//! The committed-offsets file from anywhere: nothing may panic, and every
//! entry found lies inside the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seglog::storage::offsets;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(scan) = offsets::decode_journal(bytes) {
        assert!(scan.end_position as usize <= bytes.len());
        for entry in &scan.entries {
            let value = entry.commit.map_or(0, |(_, value)| value.len());
            assert!((entry.position as usize) + entry.key.len() + value <= bytes.len());
        }
    }
});
