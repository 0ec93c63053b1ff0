//! The wall clock as both front ends count it: milliseconds since the Unix
//! epoch, the unit of Kafka's timestamps and of the HTTP API's.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch; 0 for a clock set before
/// 1970, which no timestamp check relies on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
