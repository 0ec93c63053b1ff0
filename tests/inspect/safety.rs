//! Inspecting a store in use changes nothing and never fails; a closed
//! pipe ends the inspector quietly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use seglog::{Store, StoreConfig};
use tempfile::TempDir;

use crate::common::*;

/// The inspector reads a store in use without changing a byte of it, and
/// the store keeps working.
#[test]
fn a_running_store_is_inspected_without_change() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
    for i in 0..50u32 {
        store
            .append("live", i.to_string().as_bytes())
            .expect("append");
    }
    store.commit("live", 10).expect("commit");
    store.sync().expect("sync");
    let before = snapshot(&dir);
    for args in [
        &[STORE][..],
        &[STORE, "--verify"],
        &[STORE, "--records", "--index", "--json"],
        &[STORE, "--records", "--index", "--verify", "--full"],
    ] {
        let run = inspect(tmp.path(), args);
        assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
        assert_eq!(run.stderr, "");
    }
    let run = inspect(tmp.path(), &[STORE]);
    assert!(
        run.stdout
            .contains("not closed cleanly (no CLEAN marker): running"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  live     0    49       50"),
        "{}",
        run.stdout
    );
    assert_eq!(snapshot(&dir), before, "inspect changed the store's files");
    store
        .append("live", b"after")
        .expect("append after inspecting");
    store.sync().expect("sync after inspecting");
    let mut last = None;
    store
        .read("live", 50, &mut |offset, payload| {
            last = Some((offset, payload.to_vec()));
            true
        })
        .expect("read");
    assert_eq!(last, Some((50, b"after".to_vec())));
    assert_eq!(store.committed("live"), Some(10));
}

/// `seglog inspect ... | head`: the reader leaving is not an error.
#[test]
fn closed_pipe_exits_quietly() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let mut store = Store::open(&dir, StoreConfig::default()).expect("open");
    let message = "m".repeat(100);
    for _ in 0..20_000 {
        store.append("big", message.as_bytes()).expect("append");
    }
    store.close().expect("close");
    // Far more output than a pipe buffers, so the writer meets the closed pipe.
    let mut child = Command::new(BIN)
        .current_dir(tmp.path())
        .args(["inspect", STORE, "--records", "--full"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    assert!(first.starts_with("store store:"), "{first}");
    // The reader is dropped here, closing the pipe.
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

/// Inspecting a store while it appends, syncs and rolls segments never
/// fails: whatever half-written state it catches is reported as problems
/// (exit status 1), never as an error or a crash.
#[test]
fn inspecting_a_store_while_it_writes_never_fails() {
    let tmp = TempDir::new().expect("temporary directory");
    let dir = tmp.path().join(STORE);
    let config = StoreConfig {
        segment_bytes: 600,
        ..StoreConfig::default()
    };
    let mut store = Store::open(&dir, config).expect("open");
    store.append("busy", b"first").expect("append");
    store.sync().expect("sync");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = if i.is_multiple_of(3) { "busy" } else { "other" };
                store.append(key, i.to_string().as_bytes()).expect("append");
                if i.is_multiple_of(10) {
                    store.commit(key, i).expect("commit");
                    store.sync().expect("sync");
                }
                i += 1;
            }
            store
        })
    };
    for _ in 0..10 {
        let run = inspect(
            tmp.path(),
            &[STORE, "--verify", "--json", "--records", "--index"],
        );
        assert!(
            run.code == 0 || run.code == 1,
            "{}{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(run.stderr, "");
        json_lines(&run);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let store = writer.join().expect("writer");
    store.close().expect("close");
    assert_eq!(problems(tmp.path()), [], "a closed store is valid");
}
