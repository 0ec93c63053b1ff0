//! Counters and histograms of what the broker did, whichever front end
//! asked, written in the Prometheus text format (version 0.0.4) for the
//! HTTP front end's `GET /metrics`, which adds its own per-route counts.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: from a sync point on a
/// fast disk (under a millisecond) to one stalled for seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram.
#[derive(Default)]
pub struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`], not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&bound| seconds <= bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything counted.
#[derive(Default)]
pub struct Metrics {
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub records_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub offsets_committed: AtomicU64,
    /// Batches of idempotent producers answered as duplicates (a retry of
    /// a batch already appended), not appended again.
    pub duplicate_batches: AtomicU64,
    /// Batches of idempotent producers refused as out of order or fenced.
    pub refused_sequences: AtomicU64,
    /// Producer ids handed out by InitProducerId (a producer that bumps
    /// its epoch after an error asks again).
    pub producer_ids: AtomicU64,
    /// Writes refused because the disk was short of free space.
    pub writes_refused_no_space: AtomicU64,
    pub sync_points: AtomicU64,
    pub sync_failures: AtomicU64,
    /// Times the store was reopened in place after a failed sync, and
    /// reopens that failed (each followed by another after a backoff).
    pub store_heals: AtomicU64,
    pub store_heal_failures: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub retention_passes: AtomicU64,
    /// Long polls waiting for records now (a gauge).
    pub fetches_waiting: AtomicU64,
    /// How long sync points took to make their writes durable.
    pub sync_latency: Histogram,
    /// From a produce request's arrival to its reply being ready.
    pub produce_latency: Histogram,
}

/// Gauges read when the metrics are served.
pub struct Gauges {
    pub open_keys: usize,
    pub topics: usize,
    pub poisoned: bool,
    /// The disk's free space, as `storage::space` last estimated it.
    pub space: crate::storage::space::Status,
}

impl Metrics {
    pub fn count_fetched(&self, records: usize, bytes: usize) {
        self.records_fetched
            .fetch_add(records as u64, Ordering::Relaxed);
        self.bytes_fetched
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Writes the counters and histograms.
    pub fn render_counters(&self, out: &mut String) {
        let counters = [
            (
                "seglog_records_appended_total",
                "Records appended by produce requests.",
                &self.records_appended,
            ),
            (
                "seglog_bytes_appended_total",
                "Bytes of record payloads appended.",
                &self.bytes_appended,
            ),
            (
                "seglog_records_fetched_total",
                "Records served by fetch requests.",
                &self.records_fetched,
            ),
            (
                "seglog_bytes_fetched_total",
                "Bytes of record payloads served.",
                &self.bytes_fetched,
            ),
            (
                "seglog_offsets_committed_total",
                "Consumer group offsets committed.",
                &self.offsets_committed,
            ),
            (
                "seglog_kafka_duplicate_batches_total",
                "Idempotent producers' retried batches answered without appending them again.",
                &self.duplicate_batches,
            ),
            (
                "seglog_kafka_refused_sequences_total",
                "Idempotent producers' batches refused as out of order or of a fenced epoch.",
                &self.refused_sequences,
            ),
            (
                "seglog_kafka_producer_ids_total",
                "Producer ids handed out by InitProducerId.",
                &self.producer_ids,
            ),
            (
                "seglog_sync_points_total",
                "Sync points that made writes durable.",
                &self.sync_points,
            ),
            (
                "seglog_sync_failures_total",
                "Sync points that failed.",
                &self.sync_failures,
            ),
            (
                "seglog_store_heals_total",
                "Times the store was reopened in place after a failed sync, taking writes again.",
                &self.store_heals,
            ),
            (
                "seglog_store_heal_failures_total",
                "Reopens after a failed sync that failed themselves (another follows after a backoff).",
                &self.store_heal_failures,
            ),
            (
                "seglog_writes_refused_no_space_total",
                "Writes refused because the disk was short of free space (--min-free-bytes).",
                &self.writes_refused_no_space,
            ),
            (
                "seglog_retention_passes_total",
                "Retention passes over every topic finished.",
                &self.retention_passes,
            ),
            (
                "seglog_retention_segments_deleted_total",
                "Segments deleted by retention.",
                &self.segments_deleted,
            ),
        ];
        for (name, help, counter) in counters {
            let value = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        self.sync_latency.render(
            out,
            "seglog_sync_point_seconds",
            "Time sync points took to make their writes durable.",
        );
        self.produce_latency.render(
            out,
            "seglog_produce_seconds",
            "Time from a produce request to its durable reply.",
        );
    }

    /// Writes the gauges, read now.
    pub fn render_gauges(&self, out: &mut String, gauges: &Gauges) {
        let gauges = [
            (
                "seglog_open_keys",
                "Partition logs open in the store (the last count read, while a heal holds the store).",
                gauges.open_keys as u64,
            ),
            (
                "seglog_topics",
                "Topics in the catalog.",
                gauges.topics as u64,
            ),
            (
                "seglog_fetches_waiting",
                "Long polls waiting for records.",
                self.fetches_waiting.load(Ordering::Relaxed),
            ),
            (
                "seglog_store_poisoned",
                "1 when a failed sync made the store refuse writes.",
                u64::from(gauges.poisoned),
            ),
            (
                "seglog_store_healing",
                "1 while the store is being reopened in place after a failed sync \
                 (writes refused, reads served).",
                u64::from(gauges.poisoned),
            ),
            (
                "seglog_disk_free_bytes",
                "Free bytes on the data directory's file system.",
                gauges.space.free_bytes,
            ),
            (
                "seglog_disk_min_free_bytes",
                "Free bytes below which writes are refused (--min-free-bytes).",
                gauges.space.min_free_bytes,
            ),
            (
                "seglog_disk_space_short",
                "1 while record writes are refused because the disk is short of free space.",
                u64::from(!gauges.space.admitting),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let histogram = Histogram::default();
        for micros in [50, 300, 300, 4_000, 9_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let mut out = String::new();
        histogram.render(&mut out, "h", "help");
        assert!(out.contains("h_bucket{le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"0.0005\"} 3\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"0.005\"} 4\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"2.5\"} 4\n"), "{out}");
        assert!(out.contains("h_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("h_count 5\n"), "{out}");
        assert!(out.contains("h_sum 9.00465\n"), "{out}");
    }
}
