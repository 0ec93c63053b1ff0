//! `seglog serve`: the real binary on free local ports, through a real HTTP
//! client and through real Kafka clients (kcat, confluent-kafka,
//! kafka-python) and raw Kafka frames.

#[path = "support/mod.rs"]
mod support;

#[path = "serve/http.rs"]
mod http;
#[path = "serve/kafka.rs"]
mod kafka;
