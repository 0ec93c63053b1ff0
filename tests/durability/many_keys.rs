//! Many keys in one store under a 256-descriptor limit: 100,000 in the
//! long tier, 10,000 by default. Files and maps are opened on demand and
//! closed least recently used first.
//!
//! The test runs in a process of its own, because the descriptor limit
//! applies to the whole process.

use seglog::{Store, StoreConfig};
use tempfile::TempDir;

use crate::support::{own_process, tier};

/// Keys written by default: 40 times the descriptor limit, so keys are
/// evicted and reopened all the time, in a few seconds.
const KEYS_SHORT: u64 = 10_000;
/// Keys written in the long tier. `SEGLOG_MANY_KEYS` overrides both.
const KEYS_LONG: u64 = 100_000;
/// The lowered open-file limit.
const FILE_LIMIT: u64 = 256;
/// Keys appended between sync points.
const KEYS_PER_SYNC: usize = 2_000;

fn lower_file_limit() {
    let limit = libc::rlimit {
        rlim_cur: FILE_LIMIT,
        rlim_max: FILE_LIMIT,
    };
    // SAFETY: setrlimit reads the struct we pass and has no other effect on memory.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    assert_eq!(rc, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Guards against one open file (or map) per key, which runs out of
/// descriptors long before 10,000 keys. (The process's peak RSS is printed
/// for a person to read, not asserted: no bound on it would be honest on
/// every machine.)
#[test]
fn many_keys_read_back_under_a_low_file_limit() {
    own_process::run(
        "many_keys::many_keys_read_back_under_a_low_file_limit",
        write_and_read_back_under_a_low_file_limit,
    );
}

fn write_and_read_back_under_a_low_file_limit() {
    let keys = usize::try_from(tier::sized("SEGLOG_MANY_KEYS", KEYS_SHORT, KEYS_LONG))
        .expect("SEGLOG_MANY_KEYS fits in usize");
    lower_file_limit();
    let dir = TempDir::new().expect("tempdir");
    // The default is derived from the (now lowered) descriptor limit.
    let config = StoreConfig::default();
    assert!(
        config.open_keys_max < FILE_LIMIT as usize,
        "{}",
        config.open_keys_max
    );
    let key = |i: usize| format!("key-{i}");
    let started = std::time::Instant::now();
    {
        let mut store = Store::open(dir.path(), config.clone()).expect("open");
        let mut rss_after_first_batch = 0;
        for i in 0..keys {
            assert_eq!(
                store
                    .append(&key(i), format!("{i}").as_bytes())
                    .expect("append"),
                0
            );
            if i % KEYS_PER_SYNC == KEYS_PER_SYNC - 1 {
                store.sync().expect("sync");
                assert!(
                    store.open_key_count() <= config.open_keys_max,
                    "{} keys open after a sync",
                    store.open_key_count()
                );
                if rss_after_first_batch == 0 {
                    rss_after_first_batch = rss_kib();
                }
            }
            if i % 997 == 0 {
                store.commit(&key(i), 0).expect("commit");
            }
        }
        store.sync().expect("sync");
        eprintln!(
            "wrote {keys} keys in {:?}; RSS {} KiB after the first {KEYS_PER_SYNC}, {} KiB at the end",
            started.elapsed(),
            rss_after_first_batch,
            rss_kib()
        );
    }
    let started = std::time::Instant::now();
    let mut store = Store::open(dir.path(), config.clone()).expect("reopen");
    for i in (0..keys).rev() {
        let mut seen = Vec::new();
        store
            .read(&key(i), 0, &mut |offset, payload| {
                seen.push((offset, payload.to_vec()));
                true
            })
            .expect("read");
        assert_eq!(seen, vec![(0, format!("{i}").into_bytes())]);
        assert!(store.open_key_count() <= config.open_keys_max);
    }
    for i in (0..keys).step_by(997) {
        assert_eq!(store.committed(&key(i)), Some(0));
    }
    eprintln!("read {keys} keys back in {:?}", started.elapsed());
}
