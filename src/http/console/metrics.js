// Reading the server's /metrics (the Prometheus text format, version
// 0.0.4) and turning two samples into rates and latency quantiles, as
// Prometheus's rate() and histogram_quantile() would.

/** Parses the text into a Map from metric name to [{labels, value}]. */
export function parse(text) {
  const metrics = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match) continue;
    const [, name, , labelText, valueText] = match;
    const labels = {};
    if (labelText) {
      for (const pair of labelText.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[pair[1]] = pair[2];
      }
    }
    const value = valueText === "+Inf" ? Infinity : Number(valueText);
    if (!metrics.has(name)) metrics.set(name, []);
    metrics.get(name).push({ labels, value });
  }
  return metrics;
}

/** The value of a metric without labels (or of its first series); null
 * when the server has no such metric. */
export function value(metrics, name) {
  const series = metrics.get(name);
  return series && series.length > 0 ? series[0].value : null;
}

/** A histogram's cumulative buckets [{le, count}] (sorted, +Inf last). */
export function buckets(metrics, name) {
  return (metrics.get(`${name}_bucket`) || [])
    .map(({ labels, value: c }) => ({ le: labels.le === "+Inf" ? Infinity : Number(labels.le), count: c }))
    .sort((a, b) => a.le - b.le);
}

/** The q-quantile of the observations between two samples of a
 * histogram's cumulative buckets, interpolated linearly inside the bucket
 * it falls in (histogram_quantile's rule); null when nothing was observed
 * in between. A quantile in the +Inf bucket is the largest finite bound. */
export function quantile(q, before, after) {
  const delta = after.map((b, i) => ({ le: b.le, count: b.count - (before[i] ? before[i].count : 0) }));
  const total = delta.length > 0 ? delta[delta.length - 1].count : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const b of delta) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower;
      const inBucket = b.count - below;
      return inBucket > 0 ? lower + ((b.le - lower) * (rank - below)) / inBucket : b.le;
    }
    lower = b.le;
    below = b.count;
  }
  return lower;
}

/** Per-second rate of a counter between two samples taken `seconds` apart;
 * null for the first sample or a counter that went back (a restart). */
export function rate(before, after, seconds) {
  if (before === null || after === null || seconds <= 0 || after < before) return null;
  return (after - before) / seconds;
}
