//! `seglog serve`: the real binary on free local ports, through a real HTTP
//! client and through real Kafka clients (kcat, confluent-kafka,
//! kafka-python) and raw Kafka frames; its console in a real browser
//! (headless Chromium); and the command-line client against it.

#[path = "support/mod.rs"]
mod support;

#[path = "serve/cli.rs"]
mod cli;
#[path = "serve/console.rs"]
mod console;
#[path = "serve/groups_and_time.rs"]
mod groups_and_time;
#[path = "serve/http.rs"]
mod http;
#[path = "serve/idempotence.rs"]
mod idempotence;
#[path = "serve/kafka.rs"]
mod kafka;
#[path = "serve/tls.rs"]
mod tls;
