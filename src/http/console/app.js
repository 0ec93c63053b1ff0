// The console's entry point: reads its settings, keeps the health badge
// up to date, and shows the page the address's hash names:
//   #/                          overview (overview.js)
//   #/topics, #/topics/T        topics and one topic (topics.js)
//   #/topics/T/P?offset=N       a partition's records (records.js);
//                               or ?time=MS; &limit=N records a page
//   #/groups, #/groups/G        consumer groups and one group (groups.js)

import { getHealth, getJson } from "./api.js";
import { h, replace } from "./dom.js";
import * as groups from "./groups.js";
import * as overview from "./overview.js";
import * as records from "./records.js";
import * as topics from "./topics.js";

/** How often the health badge asks /health. */
const HEALTH_EVERY_MS = 5000;

const main = document.getElementById("main");
const banner = document.getElementById("error");

/** What every page gets: the settings, the error banner, timers. */
const ctx = {
  config: { writable: false, version: "" },
  /** Shows an error (a string or an Error) above the page. */
  error(e) {
    banner.textContent = typeof e === "string" ? e : e.message;
    banner.hidden = false;
  },
  clearError() {
    banner.hidden = true;
    banner.textContent = "";
  },
  every: (ms, work) => every(ms, work),
};

/** Runs `work` now and then `ms` after each run ends (never two at once),
 * until the returned function is called. An error goes to the banner and
 * the next run goes on. */
function every(ms, work) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    try {
      await work();
    } catch (e) {
      if (!stopped) ctx.error(e);
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** The page for a hash: [module, params]. */
function pageFor(hash) {
  const [path, query] = hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  if (parts[0] === "topics" && parts.length === 1) return [topics.renderList, { ...params }, "topics"];
  if (parts[0] === "topics" && parts.length === 2) return [topics.renderTopic, { ...params, topic: parts[1] }, "topics"];
  if (parts[0] === "topics" && parts.length === 3) {
    return [records.render, { ...params, topic: parts[1], partition: parts[2] }, "topics"];
  }
  if (parts[0] === "groups" && parts.length === 1) return [groups.renderList, params, "groups"];
  if (parts[0] === "groups" && parts.length === 2) return [groups.renderGroup, { ...params, group: parts[1] }, "groups"];
  if (parts.length === 0) return [overview.render, params, "overview"];
  return [notFound, { path }, null];
}

function notFound(el, params) {
  replace(el, h("h1", {}, "No such page"), h("p", {}, `Nothing here at #/${params.path}. `, h("a", { href: "#/" }, "Overview")));
  return () => {};
}

let cleanup = () => {};

function show() {
  cleanup();
  ctx.clearError();
  const [render, params, nav] = pageFor(location.hash);
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === nav);
  }
  replace(main);
  cleanup = render(main, params, ctx) || (() => {});
}

async function start() {
  try {
    ctx.config = await getJson("/ui/config.json");
  } catch (e) {
    ctx.error(e);
  }
  replace(document.getElementById("footer"),
    `seglog ${ctx.config.version} · `,
    ctx.config.writable ? "topics can be created and deleted here (--console-writable)" : "read-only",
    " · ", h("a", { href: "vendor/uplot/LICENSE" }, "uPlot licence"));
  const badge = document.getElementById("health");
  every(HEALTH_EVERY_MS, async () => {
    const health = await getHealth();
    badge.textContent = health.ok ? "healthy" : "unhealthy";
    badge.title = health.message;
    badge.className = health.ok ? "health ok" : "health bad";
  });
  window.addEventListener("hashchange", show);
  show();
}

start();
