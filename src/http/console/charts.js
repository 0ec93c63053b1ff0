// Live time-series charts, drawn by uPlot (vendored: vendor/uplot/). A
// chart keeps the last WINDOW_POINTS samples and redraws on each new one.

/** Samples a chart keeps: five minutes at one sample a second, enough to
 * see a trend and small enough to redraw in well under a millisecond. */
export const WINDOW_POINTS = 300;

/** Series colours, in order; a chart with more series reuses them. */
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];

/** Height of every chart's plot, in CSS pixels. */
const HEIGHT = 180;

export class LiveChart {
  /** `container` gets the chart; `name` marks it for tests
   * (`data-chart`); `series` are the labels; `format` renders an axis
   * value. */
  constructor(container, name, title, series, format) {
    this.box = document.createElement("div");
    this.box.className = "chart";
    this.box.dataset.chart = name;
    this.box.dataset.points = "0";
    container.appendChild(this.box);
    this.labels = series;
    this.data = [[], ...series.map(() => [])];
    const axisValues = (u, values) => values.map((v) => (v === null ? "" : format(v)));
    this.plot = new uPlot({
      title,
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [{}, { values: axisValues, size: 84 }],
      series: [
        {},
        ...series.map((label, i) => ({
          label,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          spanGaps: false,
          value: (u, v) => (v === null || v === undefined ? "—" : format(v)),
        })),
      ],
    }, this.data, this.box);
    this.resized = new ResizeObserver(() => this.plot.setSize({ width: this.width(), height: HEIGHT }));
    this.resized.observe(this.box);
  }

  width() {
    return Math.max(240, this.box.clientWidth || 600);
  }

  /** Adds a sample: `t` in milliseconds since the epoch, one value per
   * series (null for a gap). */
  push(t, values) {
    this.data[0].push(t / 1000);
    values.forEach((v, i) => this.data[i + 1].push(v));
    if (this.data[0].length > WINDOW_POINTS) this.data.forEach((column) => column.shift());
    this.plot.setData(this.data);
    this.box.dataset.points = String(this.data[0].length);
  }

  /** Whether the chart draws exactly these series. */
  hasSeries(labels) {
    return labels.length === this.labels.length && labels.every((l, i) => l === this.labels[i]);
  }

  destroy() {
    this.resized.disconnect();
    this.plot.destroy();
    this.box.remove();
  }
}
