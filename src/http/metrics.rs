//! `GET /metrics`: the broker's counters, histograms and gauges, and the
//! HTTP front end's own counts (requests by route and status, error
//! replies by stable code, the uptime), in the Prometheus text format
//! (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use crate::broker::metrics::{Gauges, Metrics};
use crate::lock::lock;

/// Requests of one route, by status and method.
type ByStatus = BTreeMap<(u16, &'static str), u64>;

/// What the HTTP front end counts itself.
pub struct HttpMetrics {
    /// When the front end started: the server's uptime is counted from it.
    started: Instant,
    /// Requests by route, then by status and method.
    requests: Mutex<BTreeMap<String, ByStatus>>,
    /// Error replies by stable code.
    errors: Mutex<BTreeMap<u32, u64>>,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            started: Instant::now(),
            requests: Mutex::default(),
            errors: Mutex::default(),
        }
    }
}

impl HttpMetrics {
    /// Counts a request; allocates only for a route seen the first time.
    pub fn count_request(&self, method: &'static str, route: &str, status: u16) {
        let mut requests = lock(&self.requests);
        let by_status = match requests.get_mut(route) {
            Some(by_status) => by_status,
            None => requests.entry(route.to_string()).or_default(),
        };
        *by_status.entry((status, method)).or_default() += 1;
    }

    pub fn count_error(&self, code: u32) {
        *lock(&self.errors).entry(code).or_default() += 1;
    }

    /// The whole `/metrics` page: the broker's counters, then this front
    /// end's, then the gauges.
    pub fn render(&self, broker: &Metrics, gauges: &Gauges) -> String {
        let mut out = String::new();
        broker.render_counters(&mut out);
        let _ = writeln!(
            out,
            "# HELP seglog_http_requests_total HTTP requests by route and status.\n\
             # TYPE seglog_http_requests_total counter"
        );
        for (route, by_status) in lock(&self.requests).iter() {
            for ((status, method), count) in by_status {
                let _ = writeln!(
                    out,
                    "seglog_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP seglog_errors_total Error replies by error code.\n\
             # TYPE seglog_errors_total counter"
        );
        for (code, count) in lock(&self.errors).iter() {
            let _ = writeln!(out, "seglog_errors_total{{code=\"{code}\"}} {count}");
        }
        broker.render_gauges(&mut out, gauges);
        let _ = writeln!(
            out,
            "# HELP seglog_uptime_seconds Time since the server started.\n\
             # TYPE seglog_uptime_seconds gauge\n\
             seglog_uptime_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        out
    }
}
