//! `seglog serve --cluster-id NAME --cluster-secret-file PATH --node-id N
//! --peers ...`: checked (the secret file's mode and length too), and the
//! data directory kept to the node that first ran on it.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::serve_process::Server;

/// How long `seglog serve` may take to refuse its flags before the test
/// calls it a hang (it refuses before opening anything, in milliseconds):
/// a refusal that broke would start a server that never exits.
const HANG: Duration = Duration::from_secs(60);

/// Runs `seglog serve` with `args` on a fresh directory; its exit success
/// and stderr. Killed, and the test failed, if it is still running after
/// [`HANG`].
fn serve(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    serve_in(dir.path(), args)
}

/// [`serve`] on the data directory `dir`.
fn serve_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir)
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

/// A secret file of `bytes` with `mode`, in `dir`.
fn secret_file(dir: &Path, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(format!("secret-{mode:o}-{}", bytes.len()));
    std::fs::write(&path, bytes).expect("writing the secret file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .expect("setting its mode");
    path
}

/// A good secret: 44 characters of base64, as `head -c 32 /dev/urandom |
/// base64` prints them, and its newline.
const GOOD_SECRET: &[u8] = b"q0pTQhv1cX6m0o8m4nY2Qk3yZz9WbQe1lG7rS2aVdXU=\n";

/// `args` after a cluster id and the secret file at `secret`.
fn with_cluster<'a>(secret: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let secret = secret.to_str().expect("a UTF-8 temporary path");
    let mut all = vec!["--cluster-id", "test", "--cluster-secret-file", secret];
    all.extend_from_slice(args);
    all
}

#[test]
fn bad_peer_lists_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let secret = secret_file(dir.path(), GOOD_SECRET, 0o600);
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
        let (ok, stderr) = serve(&with_cluster(&secret, args));
        assert!(!ok, "{args:?} started");
        assert!(
            stderr.contains(says),
            "{args:?}: {stderr:?} does not say {says:?}"
        );
    }
}

const PEERS: [&str; 4] = [
    "--node-id",
    "2",
    "--peers",
    "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
];

/// A port nothing listens on now, for a node's own `--peers` entry.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("its address").port()
}

/// `seglog serve` with `args` on `dir` refuses to start, saying `says`.
fn refused_in(dir: &Path, args: &[&str], says: &str) {
    let (ok, stderr) = serve_in(dir, args);
    assert!(!ok, "seglog serve {args:?} started");
    assert!(
        stderr.contains(says),
        "{args:?}: {stderr:?} does not say {says:?}"
    );
}

#[test]
fn a_node_keeps_its_data_directory_to_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let secret = secret_file(dir.path(), GOOD_SECRET, 0o600);
    let peers = format!(
        "1=127.0.0.1:7001,2=127.0.0.1:{},3=127.0.0.1:7003",
        free_port()
    );
    let node_2 = ["--node-id", "2", "--peers", peers.as_str()];
    Server::start(&data, &with_cluster(&secret, &node_2)).kill();
    refused_in(&data, &[], "belongs to node 2 of cluster \"test\"");
    refused_in(&data, &[], "--node-id 2");
    let node_3 = ["--node-id", "3", "--peers", peers.as_str()];
    refused_in(
        &data,
        &with_cluster(&secret, &node_3),
        "not node 3 of cluster \"test\"",
    );
    let secret_path = secret.to_str().expect("a UTF-8 temporary path");
    let other = [
        "--cluster-id",
        "other",
        "--cluster-secret-file",
        secret_path,
    ];
    refused_in(
        &data,
        &[&other[..], &node_2].concat(),
        "not node 2 of cluster \"other\"",
    );
}

#[test]
fn a_single_nodes_topics_are_not_taken_for_a_clusters() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    let single = Server::start(&data, &[]);
    single.create_topic("single", 1);
    single.kill();
    let secret = secret_file(dir.path(), GOOD_SECRET, 0o600);
    refused_in(
        &data,
        &with_cluster(&secret, &PEERS),
        "holds the topics of a single node",
    );
}

#[test]
fn a_secret_file_others_may_read_or_too_short_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let open = secret_file(dir.path(), GOOD_SECRET, 0o644);
    let (ok, stderr) = serve(&with_cluster(&open, &PEERS));
    assert!(!ok, "seglog serve started with a secret file of mode 0644");
    assert!(
        stderr.contains("permissions 0644 are too open") && stderr.contains("chmod 600"),
        "stderr: {stderr:?}"
    );
    let short = secret_file(dir.path(), b"hunter2\n", 0o600);
    let (ok, stderr) = serve(&with_cluster(&short, &PEERS));
    assert!(!ok, "seglog serve started with a password for a secret");
    assert!(
        stderr.contains("neither hex nor base64"),
        "stderr: {stderr:?}"
    );
    // Without the secret file, or the cluster id: clap says which is
    // missing.
    let (ok, stderr) = serve(&[&["--cluster-id", "test"][..], &PEERS].concat());
    assert!(
        !ok && stderr.contains("--cluster-secret-file"),
        "stderr: {stderr:?}"
    );
    let secret = secret_file(dir.path(), GOOD_SECRET, 0o600);
    let path = secret.to_str().expect("a UTF-8 temporary path");
    let (ok, stderr) = serve(&[&["--cluster-secret-file", path][..], &PEERS].concat());
    assert!(!ok && stderr.contains("--cluster-id"), "stderr: {stderr:?}");
    let (ok, stderr) = serve(
        &with_cluster(&secret, &PEERS)
            .iter()
            .map(|a| if *a == "test" { "bad id" } else { a })
            .collect::<Vec<_>>(),
    );
    assert!(
        !ok && stderr.contains("--cluster-id \"bad id\""),
        "stderr: {stderr:?}"
    );
}

#[test]
fn the_cluster_flags_are_in_the_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(["serve", "--help"])
        .output()
        .expect("running seglog serve --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && help.contains("--listen"),
        "{help}"
    );
    for flag in [
        "--peers",
        "--node-id",
        "--cluster-id",
        "--cluster-secret-file",
    ] {
        assert!(help.contains(flag), "{flag} missing: {help}");
    }
}
