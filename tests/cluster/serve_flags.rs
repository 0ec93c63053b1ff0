//! `seglog serve --node-id N --peers ...`: checked, and refused until
//! cluster mode is built, so no one runs a "cluster" that replicates
//! nothing.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `seglog serve` may take to refuse its flags before the test
/// calls it a hang (it refuses before opening anything, in milliseconds):
/// a refusal that broke would start a server that never exits.
const HANG: Duration = Duration::from_secs(60);

/// Runs `seglog serve` with `args` on a fresh directory; its exit success
/// and stderr. Killed, and the test failed, if it is still running after
/// [`HANG`].
fn serve(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running seglog serve");
    let mut stderr = child.stderr.take().expect("a piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for seglog serve") {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!("seglog serve {args:?} still running after {HANG:?}: it started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().expect("reading stderr");
    (status.success(), stderr)
}

#[test]
fn bad_peer_lists_are_refused_with_the_reason() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--node-id",
                "4",
                "--peers",
                "1=127.0.0.1:7001,2=127.0.0.1:7002",
            ],
            "--node-id 4 is not in --peers",
        ),
        (
            &[
                "--node-id",
                "1",
                "--peers",
                "1=127.0.0.1:7001,1=127.0.0.1:7002",
            ],
            "node 1 is listed twice",
        ),
        (
            &["--node-id", "1", "--peers", "1=127.0.0.1"],
            "is not HOST:PORT",
        ),
        (&["--peers", "1=127.0.0.1:7001"], "--node-id"),
    ];
    for (args, says) in cases {
        let (ok, stderr) = serve(args);
        assert!(!ok, "{args:?} started");
        assert!(
            stderr.contains(says),
            "{args:?}: {stderr:?} does not say {says:?}"
        );
    }
}

#[test]
fn a_valid_peer_list_is_refused_until_cluster_mode_is_built() {
    let (ok, stderr) = serve(&[
        "--node-id",
        "2",
        "--peers",
        "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
    ]);
    assert!(!ok, "seglog serve started with --peers");
    assert!(
        stderr.contains("cluster mode is not built yet"),
        "stderr: {stderr:?}"
    );
}

#[test]
fn the_cluster_flags_are_hidden_from_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(["serve", "--help"])
        .output()
        .expect("running seglog serve --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && help.contains("--listen"),
        "{help}"
    );
    assert!(
        !help.contains("--peers") && !help.contains("--node-id"),
        "{help}"
    );
}
