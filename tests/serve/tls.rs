//! TLS and authentication on `seglog serve`: a self-signed certificate
//! made in the test (rcgen), a users file made with the real `seglog
//! users`, and real clients: kcat over TLS and over SASL_SSL with
//! SCRAM-SHA-256 and PLAIN, confluent-kafka with SASL_SSL and
//! SCRAM-SHA-512, kafka-python with SASL/PLAIN, curl over HTTPS with basic
//! auth; raw frames for a client that skips the handshake and for garbage.
//!
//! kcat, curl and the Python clients are installed by
//! `scripts/test-setup.sh`; a missing one fails the test that needs it,
//! naming how to install it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
    TopicName, metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::kafka::{CLIENTS, reply, request, run, start_with};
use crate::support::serve_process::{PATIENCE, Server};
use crate::support::tools;

const ADMIN_PASSWORD: &str = "admin-secret-1";
const LIMITED_PASSWORD: &str = "limited-secret-2";

/// A certificate for 127.0.0.1 and localhost, a users file with `admin`
/// (every topic) and `limited` (reads and writes `public.` only), in a
/// temporary directory.
struct Setup {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    users: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let made = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ])
        .expect("a self-signed certificate");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write the key");
        let users = dir.path().join("users.json");
        users_command(
            &users,
            &["add", "admin", "--password-stdin"],
            Some(ADMIN_PASSWORD),
        )
        .success();
        users_command(
            &users,
            &[
                "add",
                "limited",
                "--password-stdin",
                "--read",
                "public.",
                "--write",
                "public.",
            ],
            Some(LIMITED_PASSWORD),
        )
        .success();
        Setup {
            dir,
            cert,
            key,
            users,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts a server with TLS (when `tls`) and the users (when `users`)
    /// on both listeners; returns it and its Kafka address.
    fn start(&self, tls: bool, users: bool) -> (Server, String) {
        let mut args = Vec::new();
        if tls {
            args.extend(["--tls-cert", path(&self.cert), "--tls-key", path(&self.key)]);
        }
        if users {
            args.extend(["--users", path(&self.users)]);
        }
        start_with(&self.data(), &args)
    }

    /// kcat's settings for a protocol, mechanism, user and password.
    fn kcat_security(&self, protocol: &str, sasl: Option<(&str, &str, &str)>) -> Vec<String> {
        let mut out = vec!["-X".to_string(), format!("security.protocol={protocol}")];
        if protocol.ends_with("SSL") {
            out.extend(["-X".into(), format!("ssl.ca.location={}", path(&self.cert))]);
        }
        if let Some((mechanism, user, password)) = sasl {
            out.extend([
                "-X".into(),
                format!("sasl.mechanisms={mechanism}"),
                "-X".into(),
                format!("sasl.username={user}"),
                "-X".into(),
                format!("sasl.password={password}"),
            ]);
        }
        out
    }
}

/// Runs kcat against `bootstrap` with `security` settings and `args`;
/// returns its stdout (it must succeed).
fn kcat(bootstrap: &str, security: &[String], args: &[&str], input: Option<&[u8]>) -> String {
    run(
        Command::new("kcat")
            .args(["-b", bootstrap])
            .args(args)
            .args(security),
        input,
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// The outcome of a command that may fail.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn success(self) -> Outcome {
        assert_eq!(self.code, Some(0), "failed: {}", self.stderr);
        self
    }
}

/// Runs a command with `input` on stdin and a deadline, whatever its exit.
fn outcome(command: &mut Command, input: Option<&str>) -> Outcome {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn users_command(file: &Path, args: &[&str], stdin: Option<&str>) -> Outcome {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_seglog"))
            .arg("users")
            .args(args)
            .args(["--users", path(file)]),
        stdin,
    )
}

fn require_curl() {
    tools::require(
        "curl",
        Command::new("curl").arg("--version"),
        "apt-get install -y curl",
    );
}

/// curl against the server's HTTPS address: status code and body.
fn curl(setup: &Setup, server: &Server, args: &[&str], route: &str) -> (u16, String) {
    let out = outcome(
        Command::new("curl")
            .args(["-sS", "--cacert", path(&setup.cert), "-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("{}{route}", server.base)),
        None,
    )
    .success();
    let (body, status) = out.stdout.rsplit_once('\n').expect("a status line");
    (status.trim().parse().expect("a status"), body.to_string())
}

#[test]
fn users_are_added_listed_and_removed_and_no_password_is_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("users.json");
    let stdin_password = "from-stdin-pw-7";
    let flag_password = "from-flag-pw-8";
    let added = users_command(
        &file,
        &["add", "carol", "--password-stdin"],
        Some(stdin_password),
    )
    .success();
    assert!(
        added.stdout.contains("added user carol"),
        "{}",
        added.stdout
    );
    users_command(
        &file,
        &[
            "add",
            "dave",
            "--password",
            flag_password,
            "--read",
            "logs.",
        ],
        None,
    )
    .success();
    let listed = users_command(&file, &["list"], None).success().stdout;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[1].starts_with("carol") && lines[1].contains("(all topics)"),
        "{listed}"
    );
    assert!(
        lines[2].starts_with("dave") && lines[2].contains("\"logs.\""),
        "{listed}"
    );
    let text = std::fs::read_to_string(&file).expect("read the users file");
    for password in [stdin_password, flag_password] {
        assert!(!text.contains(password), "a password in the file: {text}");
    }
    assert!(
        text.contains("stored_key") && text.contains("\"iterations\": 4096"),
        "{text}"
    );
    // A new password replaces the credential.
    let before = text.clone();
    users_command(&file, &["add", "carol", "--password", "another-pw"], None).success();
    assert_ne!(std::fs::read_to_string(&file).expect("read"), before);
    users_command(&file, &["remove", "carol"], None).success();
    let listed = users_command(&file, &["list"], None).success().stdout;
    assert!(
        !listed.contains("carol") && listed.contains("dave"),
        "{listed}"
    );
    // Errors: an unknown user, no password, a bad name; nothing changes.
    let after = std::fs::read_to_string(&file).expect("read");
    let unknown = users_command(&file, &["remove", "nobody"], None);
    assert_eq!(unknown.code, Some(1));
    assert!(
        unknown.stderr.contains("no user \"nobody\""),
        "{}",
        unknown.stderr
    );
    let empty = users_command(&file, &["add", "erin", "--password-stdin"], Some(""));
    assert_eq!(empty.code, Some(1), "{}", empty.stderr);
    let colon = users_command(&file, &["add", "a:b", "--password", "x"], None);
    assert_eq!(colon.code, Some(1), "{}", colon.stderr);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), after);
}

#[test]
fn serve_refuses_to_start_with_a_bad_certificate_key_or_users_file() {
    let setup = Setup::new();
    let garbage = setup.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = setup.dir.path().join("missing.pem");
    let data = setup.data();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", path(&missing), "--tls-key", path(&setup.key)],
            "--tls-cert",
        ),
        (
            vec!["--tls-cert", path(&garbage), "--tls-key", path(&setup.key)],
            "no certificate",
        ),
        (
            vec!["--tls-cert", path(&setup.cert), "--tls-key", path(&garbage)],
            "--tls-key",
        ),
        (vec!["--tls-cert", path(&setup.cert)], "--tls-key"),
        (
            vec!["--users", path(&missing)],
            "cannot open the users file",
        ),
        (vec!["--users", path(&garbage)], "not a users file"),
    ];
    for (args, expected) in cases {
        let out = outcome(
            Command::new(env!("CARGO_BIN_EXE_seglog"))
                .args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    path(&data),
                ])
                .args(&args),
            None,
        );
        assert_ne!(out.code, Some(0), "{args:?} started");
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn kcat_over_tls_produces_and_consumes_and_a_plain_client_is_not_served() {
    tools::require_kcat();
    let setup = Setup::new();
    let (_server, bootstrap) = setup.start(true, false);
    let ssl = setup.kcat_security("SSL", None);
    kcat(
        &bootstrap,
        &ssl,
        &["-P", "-t", "tls-topic"],
        Some(b"one\ntwo\nthree\n"),
    );
    let read = kcat(
        &bootstrap,
        &ssl,
        &["-C", "-t", "tls-topic", "-e", "-f", "%s\n"],
        None,
    );
    assert_eq!(read, "one\ntwo\nthree\n");
    // A client speaking plain Kafka to the TLS listener gets no reply:
    // its bytes are not a TLS handshake.
    let mut plain = TcpStream::connect(&bootstrap).expect("connect");
    plain.set_read_timeout(Some(PATIENCE)).expect("timeout");
    plain
        .write_all(&request(3, 1, &ApiVersionsRequest::default()))
        .expect("send");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    // A TLS alert record (content type 21) at most, never a Kafka reply
    // (whose size prefix starts with a zero byte).
    assert!(
        answer.is_empty() || answer[0] == 21,
        "a reply to plain Kafka on the TLS listener: {answer:?}"
    );
    // The server serves on.
    let again = kcat(
        &bootstrap,
        &ssl,
        &["-C", "-t", "tls-topic", "-e", "-c", "1", "-f", "%s\n"],
        None,
    );
    assert_eq!(again, "one\n");
}

#[test]
fn kcat_with_sasl_ssl_scram_sha_256_and_plain_and_wrong_passwords_refused() {
    tools::require_kcat();
    let setup = Setup::new();
    let (_server, bootstrap) = setup.start(true, true);
    let scram = setup.kcat_security("SASL_SSL", Some(("SCRAM-SHA-256", "admin", ADMIN_PASSWORD)));
    let plain = setup.kcat_security("SASL_SSL", Some(("PLAIN", "admin", ADMIN_PASSWORD)));
    kcat(
        &bootstrap,
        &scram,
        &["-P", "-t", "orders", "-K:"],
        Some(b"alice:tea\nbob:cake\n"),
    );
    let read = kcat(
        &bootstrap,
        &plain,
        &["-C", "-t", "orders", "-e", "-f", "%k=%s\n"],
        None,
    );
    assert_eq!(read, "alice=tea\nbob=cake\n");
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let wrong = setup.kcat_security("SASL_SSL", Some((mechanism, "admin", "wrong-password")));
        let out = outcome(
            Command::new("kcat")
                .args(["-b", &bootstrap, "-P", "-t", "orders"])
                .args(["-X", "message.timeout.ms=5000"])
                .args(&wrong),
            Some("must-not-land\n"),
        );
        assert_ne!(out.code, Some(0), "{mechanism}: {}", out.stderr);
        assert!(
            out.stderr.contains("Authentication failed"),
            "{mechanism}: {}",
            out.stderr
        );
        let unknown = setup.kcat_security("SASL_SSL", Some((mechanism, "nobody", "x")));
        let out = outcome(
            Command::new("kcat")
                .args(["-b", &bootstrap, "-L", "-m", "10"])
                .args(&unknown),
            None,
        );
        assert!(
            out.code != Some(0) && out.stderr.contains("Authentication failed"),
            "{mechanism}: {}",
            out.stderr
        );
    }
    // Nothing of the refused producers landed.
    let read = kcat(
        &bootstrap,
        &scram,
        &["-C", "-t", "orders", "-e", "-f", "%s\n"],
        None,
    );
    assert_eq!(read, "tea\ncake\n");
}

/// The Python clients' settings, as the JSON `clients.py` takes.
fn confluent_config(setup: &Setup, mechanism: &str, user: &str, password: &str) -> String {
    serde_json::json!({
        "security.protocol": "SASL_SSL",
        "ssl.ca.location": path(&setup.cert),
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    })
    .to_string()
}

fn python(scenario: &str, bootstrap: &str, topic: &str, config: &str) -> String {
    run(
        Command::new("python3").args([CLIENTS, scenario, bootstrap, topic, config]),
        None,
    )
}

#[test]
fn confluent_kafka_with_sasl_ssl_scram_sha_512_produces_and_consumes() {
    tools::require_python_module("confluent_kafka");
    let setup = Setup::new();
    let (_server, bootstrap) = setup.start(true, true);
    let good = confluent_config(&setup, "SCRAM-SHA-512", "admin", ADMIN_PASSWORD);
    let out = python("confluent-secure", &bootstrap, "clicks", &good);
    assert!(out.starts_with("ok "), "{out}");
    let wrong = confluent_config(&setup, "SCRAM-SHA-512", "admin", "not-it");
    let out = python("confluent-denied", &bootstrap, "clicks", &wrong);
    assert!(out.starts_with("ok "), "{out}");
}

#[test]
fn kafka_python_with_sasl_plain_produces_and_consumes() {
    tools::require_python_module("kafka");
    let setup = Setup::new();
    // SASL over plain TCP (SASL_PLAINTEXT), as kafka-python is often used.
    let (_server, bootstrap) = setup.start(false, true);
    let config = |password: &str| {
        serde_json::json!({
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "admin",
            "sasl_plain_password": password,
        })
        .to_string()
    };
    let out = python(
        "kafka-python-secure",
        &bootstrap,
        "audit",
        &config(ADMIN_PASSWORD),
    );
    assert!(out.starts_with("ok "), "{out}");
    let out = python("kafka-python-denied", &bootstrap, "audit", &config("wrong"));
    assert!(out.starts_with("ok "), "{out}");
}

/// Reads one reply, or `None` when the server closed the connection.
fn reply_or_closed(stream: &mut TcpStream, correlation_id: i32) -> Option<bytes::Bytes> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("neither a reply nor a close: {e}"),
    }
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("the reply's body");
    assert_eq!(body[..4], correlation_id.to_be_bytes(), "correlation id");
    Some(bytes::Bytes::from(body).slice(4..))
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream
}

#[test]
fn a_client_that_skips_the_sasl_handshake_is_disconnected() {
    let setup = Setup::new();
    let (_server, address) = setup.start(false, true);
    // ApiVersions is answered before authentication, and lists SASL.
    let mut s = connect(&address);
    s.write_all(&request(0, 1, &ApiVersionsRequest::default()))
        .expect("send");
    let versions = ApiVersionsResponse::decode(&mut reply(&mut s, 1), 0).expect("a reply");
    let sasl: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .filter(|k| k.api_key == 17 || k.api_key == 36)
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    assert_eq!(sasl, [(17, 0, 1), (36, 0, 2)]);
    // Metadata without a handshake: the connection closes, no reply.
    s.write_all(&request(4, 2, &MetadataRequest::default()))
        .expect("send");
    assert!(reply_or_closed(&mut s, 2).is_none(), "a Metadata reply");
    // SaslAuthenticate before SaslHandshake: closed too, with
    // ILLEGAL_SASL_STATE.
    let mut s = connect(&address);
    // (Version 1: the test reads replies with header v0, which flexible
    // versions do not have.)
    let token = SaslAuthenticateRequest::default().with_auth_bytes(b"\0admin\0x"[..].into());
    s.write_all(&request(1, 3, &token)).expect("send");
    let answer = SaslAuthenticateResponse::decode(&mut reply(&mut s, 3), 1).expect("a reply");
    assert_eq!(answer.error_code, 34);
    assert!(reply_or_closed(&mut s, 4).is_none());
    // An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with those offered.
    let mut s = connect(&address);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("GSSAPI"));
    s.write_all(&request(1, 5, &handshake)).expect("send");
    let answer = SaslHandshakeResponse::decode(&mut reply(&mut s, 5), 1).expect("a reply");
    assert_eq!(answer.error_code, 33);
    let offered: Vec<&str> = answer.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(offered, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    assert!(reply_or_closed(&mut s, 6).is_none());
    // Garbage SASL bytes after a SCRAM handshake: SASL_AUTHENTICATION_FAILED
    // with a message, then closed.
    let mut s = connect(&address);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256"));
    s.write_all(&request(1, 7, &handshake)).expect("send");
    let answer = SaslHandshakeResponse::decode(&mut reply(&mut s, 7), 1).expect("a reply");
    assert_eq!(answer.error_code, 0);
    let garbage = SaslAuthenticateRequest::default().with_auth_bytes(b"\xff\x00garbage"[..].into());
    s.write_all(&request(1, 8, &garbage)).expect("send");
    let answer = SaslAuthenticateResponse::decode(&mut reply(&mut s, 8), 1).expect("a reply");
    assert_eq!(answer.error_code, 58);
    assert!(answer.error_message.is_some_and(|m| !m.is_empty()));
    assert!(reply_or_closed(&mut s, 9).is_none());
    // PLAIN with a good password, then Metadata is served.
    let mut s = connect(&address);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    s.write_all(&request(1, 10, &handshake)).expect("send");
    SaslHandshakeResponse::decode(&mut reply(&mut s, 10), 1).expect("a reply");
    let token = format!("\0admin\0{ADMIN_PASSWORD}");
    let login = SaslAuthenticateRequest::default().with_auth_bytes(token.into_bytes().into());
    s.write_all(&request(1, 11, &login)).expect("send");
    let answer = SaslAuthenticateResponse::decode(&mut reply(&mut s, 11), 1).expect("a reply");
    assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
    s.write_all(&request(4, 12, &MetadataRequest::default()))
        .expect("send");
    assert!(reply_or_closed(&mut s, 12).is_some(), "no Metadata reply");
    // SaslHandshake v0: bare tokens follow, and a bare (empty) answer.
    let mut s = connect(&address);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    s.write_all(&request(0, 13, &handshake)).expect("send");
    let answer = SaslHandshakeResponse::decode(&mut reply(&mut s, 13), 0).expect("a reply");
    assert_eq!(answer.error_code, 0);
    let token = format!("\0admin\0{ADMIN_PASSWORD}");
    s.write_all(&crate::kafka::frame(token.as_bytes()))
        .expect("send");
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("a bare answer");
    assert_eq!(size, [0; 4]);
    s.write_all(&request(4, 14, &MetadataRequest::default()))
        .expect("send");
    assert!(reply_or_closed(&mut s, 14).is_some(), "no Metadata reply");
    // A wrong bare token: closed without an answer.
    let mut s = connect(&address);
    s.write_all(&request(0, 15, &handshake)).expect("send");
    SaslHandshakeResponse::decode(&mut reply(&mut s, 15), 0).expect("a reply");
    s.write_all(&crate::kafka::frame(b"\0admin\0wrong"))
        .expect("send");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "an answer to a wrong token: {rest:?}");
}

#[test]
fn a_topic_outside_a_users_prefixes_is_refused_and_nothing_is_written() {
    tools::require_kcat();
    tools::require_python_module("confluent_kafka");
    require_curl();
    let setup = Setup::new();
    let (server, bootstrap) = setup.start(true, true);
    let admin = setup.kcat_security("SASL_SSL", Some(("SCRAM-SHA-256", "admin", ADMIN_PASSWORD)));
    let limited = setup.kcat_security(
        "SASL_SSL",
        Some(("SCRAM-SHA-256", "limited", LIMITED_PASSWORD)),
    );
    kcat(
        &bootstrap,
        &admin,
        &["-P", "-t", "secret"],
        Some(b"classified\n"),
    );
    // Produce to a topic outside the write prefixes: refused per record.
    let config = confluent_config(&setup, "SCRAM-SHA-512", "limited", LIMITED_PASSWORD);
    let out = python("confluent-forbidden", &bootstrap, "secret", &config);
    assert!(out.starts_with("ok "), "{out}");
    // Fetch of it: refused.
    let out = outcome(
        Command::new("kcat")
            .args(["-b", &bootstrap, "-C", "-t", "secret", "-e", "-m", "10"])
            .args(&limited),
        None,
    );
    assert!(
        out.code != Some(0) && out.stderr.to_lowercase().contains("authoriz"),
        "{}",
        out.stderr
    );
    // Over HTTP: 403 with the stable code, for a read and for a write.
    let limited_auth = format!("limited:{LIMITED_PASSWORD}");
    let (status, body) = curl(
        &setup,
        &server,
        &["-u", &limited_auth],
        "/topics/secret/partitions/0/records?offset=0",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("40302"), "{body}");
    let post = |route: &str, json: &str| {
        let args = [
            "-u",
            &limited_auth,
            "-H",
            "Content-Type: application/json",
            "-d",
            json,
        ];
        curl(&setup, &server, &args, route)
    };
    let (status, body) = post("/topics/secret", r#"{"records":[{"value":"sneaky"}]}"#);
    assert_eq!(status, 403, "{body}");
    // The limited user's own topics work, and it sees only them.
    let (status, body) = post("/topics", r#"{"name":"public.news","partitions":1}"#);
    assert_eq!(status, 201, "{body}");
    let (status, body) = curl(&setup, &server, &["-u", &limited_auth], "/topics");
    assert_eq!((status, body.as_str()), (200, r#"["public.news"]"#));
    // Read back as admin: the secret topic holds its one record only.
    let read = kcat(
        &bootstrap,
        &admin,
        &["-C", "-t", "secret", "-e", "-f", "%s\n"],
        None,
    );
    assert_eq!(read, "classified\n");
}

#[test]
fn curl_over_https_needs_a_right_password() {
    require_curl();
    let setup = Setup::new();
    let (server, _bootstrap) = setup.start(true, true);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let admin_auth = format!("admin:{ADMIN_PASSWORD}");
    let (status, body) = curl(&setup, &server, &["-u", &admin_auth], "/topics");
    assert_eq!((status, body.as_str()), (200, "[]"));
    // Wrong password, unknown user, none at all: 401 with the challenge.
    for args in [
        vec!["-u", "admin:wrong"],
        vec!["-u", "nobody:x"],
        Vec::new(),
    ] {
        let mut with_headers = vec!["-i"];
        with_headers.extend(&args);
        let (status, text) = curl(&setup, &server, &with_headers, "/topics");
        assert_eq!(status, 401, "{args:?}: {text}");
        assert!(
            text.to_lowercase()
                .contains("www-authenticate: basic realm=\"seglog\""),
            "{text}"
        );
        assert!(text.contains("40101"), "{text}");
    }
    // The console's page is behind it too; /health is not.
    let (status, _) = curl(&setup, &server, &[], "/ui/");
    assert_eq!(status, 401);
    let (status, body) = curl(&setup, &server, &[], "/health");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    // Plain HTTP to the TLS listener is not served, and the server goes on.
    let plain = server.base.replace("https://", "http://");
    let out = outcome(
        Command::new("curl").args(["-sS", "-m", "10", &format!("{plain}/health")]),
        None,
    );
    assert_ne!(out.code, Some(0), "plain HTTP served: {}", out.stdout);
    let (status, _) = curl(&setup, &server, &["-u", &admin_auth], "/topics");
    assert_eq!(status, 200);
}

/// A connection logged in as `user` with SASL/PLAIN (handshake v1).
fn login_plain(address: &str, user: &str, password: &str) -> TcpStream {
    let mut s = connect(address);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    s.write_all(&request(1, 1, &handshake)).expect("send");
    SaslHandshakeResponse::decode(&mut reply(&mut s, 1), 1).expect("a reply");
    let token = format!("\0{user}\0{password}");
    let login = SaslAuthenticateRequest::default().with_auth_bytes(token.into_bytes().into());
    s.write_all(&request(1, 2, &login)).expect("send");
    let answer = SaslAuthenticateResponse::decode(&mut reply(&mut s, 2), 1).expect("a reply");
    assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
    s
}

/// The topics of a Metadata reply: (name, error code).
fn metadata(
    s: &mut TcpStream,
    version: i16,
    id: i32,
    topics: Option<&[&str]>,
) -> Vec<(String, i16)> {
    let topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(n.to_string()))))
            })
            .collect()
    });
    let ask = MetadataRequest::default()
        .with_topics(topics)
        .with_allow_auto_topic_creation(true);
    s.write_all(&request(version, id, &ask)).expect("send");
    let answer = MetadataResponse::decode(&mut reply(s, id), version).expect("a reply");
    answer
        .topics
        .iter()
        .map(|t| {
            let name = t.name.as_ref().map_or(String::new(), |n| n.0.to_string());
            (name, t.error_code)
        })
        .collect()
}

/// Guards against: Metadata v0, where an empty list means every topic,
/// showing a limited user the topics outside its prefixes, also when the
/// list named only refused ones.
#[test]
fn metadata_v0_shows_a_limited_user_only_its_topics() {
    let setup = Setup::new();
    let (_server, address) = setup.start(false, true);
    let mut admin = login_plain(&address, "admin", ADMIN_PASSWORD);
    let created = metadata(&mut admin, 4, 3, Some(&["secret", "public.x"]));
    assert_eq!(created.len(), 2, "{created:?}");
    let mut limited = login_plain(&address, "limited", LIMITED_PASSWORD);
    let every = metadata(&mut limited, 0, 3, Some(&[]));
    assert_eq!(every, [("public.x".to_string(), 0)], "every topic, in v0");
    // Its list emptied of the refused topic asks the handler for every
    // topic: the reply shows those the user may see, and the refusal.
    let refused = metadata(&mut limited, 0, 4, Some(&["secret"]));
    assert_eq!(
        refused,
        [("public.x".to_string(), 0), ("secret".to_string(), 29)],
        "a refused topic only, in v0"
    );
    let all = metadata(&mut limited, 4, 5, None);
    assert_eq!(all, [("public.x".to_string(), 0)], "every topic, in v4");
}
