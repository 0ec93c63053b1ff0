//! Inputs the fuzz targets (`fuzz/`) found, pinned as regression tests:
//! each once made a decoder panic on bytes from disk.

use seglog::storage::journal;

/// `journal::frames` trusted its input to be whole frames and sliced past
/// the end of one byte of garbage (`fuzz/seeds/journal/regression-frames-garbage`).
#[test]
fn regression_fuzz_journal_frames_of_garbage_stop_instead_of_panicking() {
    assert_eq!(journal::frames(0, b"\n").count(), 0);
    assert_eq!(journal::frames(0, &[0xff; 40]).count(), 0);
    let mut frame = Vec::new();
    seglog::storage::format::encode_record(&mut frame, u64::MAX, b"1");
    // The last possible offset is delivered; there is no offset after it.
    let mut doubled = frame.clone();
    doubled.extend_from_slice(&frame);
    assert_eq!(journal::frames(u64::MAX, &doubled).count(), 1);
}
