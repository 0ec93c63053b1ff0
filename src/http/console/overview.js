// The overview: health, uptime and totals from /metrics, and live charts
// of produce and fetch rates, bytes written and sync-point latency (p50
// and p99 from the histogram), sampled while the page is open.

import { getHealth, getMetricsText } from "./api.js";
import { LiveChart } from "./charts.js";
import { bytes, count, duration, h, replace } from "./dom.js";
import * as metrics from "./metrics.js";

/** How often the page samples /metrics: the charts' resolution. */
export const SAMPLE_EVERY_MS = 1000;

/** The totals shown, each from a metric without labels. */
const STATS = [
  ["records_appended", "Records produced", "seglog_records_appended_total", count],
  ["bytes_appended", "Bytes written", "seglog_bytes_appended_total", bytes],
  ["records_fetched", "Records fetched", "seglog_records_fetched_total", count],
  ["offsets_committed", "Offsets committed", "seglog_offsets_committed_total", count],
  ["sync_points", "Sync points", "seglog_sync_points_total", count],
  ["sync_failures", "Failed syncs", "seglog_sync_failures_total", count],
  ["topics", "Topics", "seglog_topics", count],
  ["open_keys", "Open partition logs", "seglog_open_keys", count],
  ["fetches_waiting", "Long polls waiting", "seglog_fetches_waiting", count],
];

const perSecond = (v) => (v >= 100 ? count(v) : v.toFixed(v >= 10 ? 1 : 2)) + "/s";
const bytesPerSecond = (v) => `${bytes(Math.round(v))}/s`;
const millis = (v) => `${v >= 10 ? v.toFixed(0) : v.toFixed(2)} ms`;

export function render(main, params, ctx) {
  const cells = new Map();
  const stat = (key, label) => {
    const value = h("div", { class: "value", "data-stat": key }, "…");
    cells.set(key, value);
    return h("div", { class: "stat" }, h("div", { class: "label" }, label), value);
  };
  const charts = h("div", { class: "charts" });
  replace(main,
    h("h1", {}, "Overview"),
    h("div", { class: "stats" },
      stat("health", "Health"),
      stat("uptime", "Uptime"),
      STATS.map(([key, label]) => stat(key, label))),
    h("p", { class: "muted" }, `Sampled from /metrics every ${SAMPLE_EVERY_MS / 1000} s while this page is open; the charts keep the last five minutes.`),
    charts);
  const rates = new LiveChart(charts, "rates", "Records per second", ["produced", "fetched"], perSecond);
  const written = new LiveChart(charts, "bytes", "Bytes written per second", ["written"], bytesPerSecond);
  const latency = new LiveChart(charts, "latency", "Sync-point latency", ["p50", "p99"], millis);

  let before = null;
  const stop = ctx.every(SAMPLE_EVERY_MS, async () => {
    const [text, health] = await Promise.all([getMetricsText(), getHealth()]);
    const now = Date.now();
    const m = metrics.parse(text);
    cells.get("health").textContent = health.ok ? "ok" : `unavailable: ${health.message}`;
    cells.get("health").className = health.ok ? "value good" : "value bad";
    const uptime = metrics.value(m, "seglog_uptime_seconds");
    cells.get("uptime").textContent = uptime === null ? "—" : duration(uptime);
    for (const [key, , name, format] of STATS) {
      cells.get(key).textContent = format(metrics.value(m, name));
    }
    const sample = {
      t: now,
      appended: metrics.value(m, "seglog_records_appended_total"),
      fetched: metrics.value(m, "seglog_records_fetched_total"),
      bytes: metrics.value(m, "seglog_bytes_appended_total"),
      sync: metrics.buckets(m, "seglog_sync_point_seconds"),
    };
    if (before !== null) {
      const seconds = (sample.t - before.t) / 1000;
      rates.push(now, [metrics.rate(before.appended, sample.appended, seconds), metrics.rate(before.fetched, sample.fetched, seconds)]);
      written.push(now, [metrics.rate(before.bytes, sample.bytes, seconds)]);
      const ms = (q) => {
        const seconds = metrics.quantile(q, before.sync, sample.sync);
        return seconds === null ? null : seconds * 1000;
      };
      latency.push(now, [ms(0.5), ms(0.99)]);
    }
    before = sample;
  });
  return () => {
    stop();
    rates.destroy();
    written.destroy();
    latency.destroy();
  };
}
