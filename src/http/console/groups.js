// Consumer groups: every group with its topics and total lag (GET /groups,
// one reply for them all), and one group's committed offsets and lag per
// partition, with a chart of each topic's lag over time, sampled while the
// page is open.

import { getJson, groupPath } from "./api.js";
import { LiveChart } from "./charts.js";
import { count, h, link, replace, table } from "./dom.js";

/** How often the list refreshes. */
const REFRESH_EVERY_MS = 5000;

/** How often a group's page samples its lag: the chart's resolution. */
export const LAG_EVERY_MS = 2000;

/** Groups shown on the list page, as with topics. */
export const GROUPS_SHOWN_MAX = 200;

/** Topics a lag chart draws a line for; the table still lists every
 * partition. More lines than this cannot be told apart. */
const LAG_SERIES_MAX = 8;

const topicsOf = (g) => [...new Set(g.partitions.map((p) => p.topic))];

export function renderList(main, params, ctx) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted" });
  replace(main, h("h1", {}, "Consumer groups ", updated), list);
  return ctx.every(REFRESH_EVERY_MS, async () => {
    const groups = await getJson("/groups");
    const shown = groups.slice(0, GROUPS_SHOWN_MAX);
    const rows = shown.map((g) => [
      link(g.group, "groups", g.group),
      g.topics.join(", "),
      count(g.partitions),
      count(g.lag),
    ]);
    replace(list,
      groups.length === 0
        ? h("p", { class: "muted" }, "No consumer group has committed an offset yet.")
        : table([["Group"], ["Topics"], ["Partitions", "num"], ["Lag", "num"]], rows, { "data-table": "groups" }),
      groups.length > shown.length ? h("p", { class: "muted" }, `The first ${shown.length} of ${count(groups.length)} groups.`) : null);
    updated.textContent = `· ${count(groups.length)}`;
  });
}

export function renderGroup(main, params, ctx) {
  const total = h("span", { "data-fact": "lag" }, "…");
  const charts = h("div", { class: "charts" });
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main,
    h("p", { class: "crumbs" }, link("Groups", "groups"), " / ", params.group),
    h("h1", {}, params.group),
    h("p", {}, "Total lag ", total, h("span", { class: "muted" }, ` records · sampled every ${LAG_EVERY_MS / 1000} s while this page is open`)),
    charts,
    body);
  let chart = null;
  const stop = ctx.every(LAG_EVERY_MS, async () => {
    const g = await getJson(groupPath(params.group));
    total.textContent = count(g.lag);
    const topics = topicsOf(g).slice(0, LAG_SERIES_MAX);
    if (chart === null || !chart.hasSeries(topics)) {
      if (chart !== null) chart.destroy();
      chart = new LiveChart(charts, "lag", "Lag by topic (records)", topics, count);
    }
    chart.push(Date.now(), topics.map((t) => g.partitions.filter((p) => p.topic === t).reduce((s, p) => s + p.lag, 0)));
    replace(body, table(
      [["Topic"], ["Partition", "num"], ["Committed", "num"], ["Log start", "num"], ["End offset", "num"], ["Lag", "num"]],
      g.partitions.map((p) => [
        link(p.topic, "topics", p.topic),
        link(String(p.partition), "topics", p.topic, p.partition),
        p.offset === null ? "–" : count(p.offset),
        count(p.log_start_offset),
        count(p.end_offset),
        count(p.lag),
      ]),
      { "data-table": "group-partitions" }));
  });
  return () => {
    stop();
    if (chart !== null) chart.destroy();
  };
}
