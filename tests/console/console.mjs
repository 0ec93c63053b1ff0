// Drives the seglog console in the system's headless Chromium
// (/usr/bin/chromium, Debian's; Playwright never downloads a browser here)
// against a running `seglog serve` that tests/serve/console.rs started and
// filled. Checks that each page shows the numbers the API gives, pages
// through a partition, that the charts update, that record bytes are shown
// as text (never markup), the create and delete forms of a writable
// console and their absence from a read-only one, and that the browser
// logged no error. Saves a screenshot of each page, at a desktop and a
// phone size, in SCREENSHOTS.
//
// Environment: SEGLOG_URL (a writable console's server), SEGLOG_READONLY_URL
// (a read-only one's), SCREENSHOTS (a directory), EXPECT (JSON from the
// Rust test: the topic, its partitions, the group).
// Exits 0 when every check passed; else prints the failure and exits 1.

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.SEGLOG_URL;
const readonlyBase = process.env.SEGLOG_READONLY_URL;
const shots = process.env.SCREENSHOTS;
const expect = JSON.parse(process.env.EXPECT);
/** Longest wait for the page to show something, in ms. */
const PATIENCE_MS = 15000;

const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 390, height: 844 };

const errors = [];
const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const fmt = (n) => n.toLocaleString("en-US");

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()).trim();
}

/** Waits until the element's text is `want` (the pages refresh). */
async function waitText(page, selector, want) {
  const deadline = Date.now() + PATIENCE_MS;
  let got = null;
  while (Date.now() < deadline) {
    got = await page.locator(selector).first().textContent({ timeout: PATIENCE_MS }).catch(() => null);
    if (got !== null && got.trim() === want) return;
    await page.waitForTimeout(100);
  }
  throw new Error(`check failed: ${selector} shows ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
}

async function points(page, chart) {
  return Number(await page.locator(`[data-chart="${chart}"]`).getAttribute("data-points"));
}

async function waitPoints(page, chart, atLeast) {
  const deadline = Date.now() + PATIENCE_MS;
  while ((await points(page, chart)) < atLeast) {
    check(Date.now() < deadline, `chart ${chart} has fewer than ${atLeast} points after ${PATIENCE_MS} ms`);
    await page.waitForTimeout(100);
  }
}

async function screenshot(page, name) {
  for (const [size, viewport] of [["desktop", DESKTOP], ["phone", PHONE]]) {
    await page.setViewportSize(viewport);
    await page.waitForTimeout(300);
    // The page must fit a phone's width: nothing wider than the viewport
    // but the boxes that scroll sideways on purpose.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, `${name} is ${overflow} px wider than a ${viewport.width} px screen`);
    await page.screenshot({ path: join(shots, `${name}-${size}.png`), fullPage: size === "desktop" });
  }
  await page.setViewportSize(DESKTOP);
}

async function overview(page) {
  step("overview");
  await page.goto(`${base}/ui/`);
  await page.waitForSelector('[data-chart="rates"]');
  const metrics = await (await fetch(`${base}/metrics`)).text();
  const metric = (name) => Number(metrics.split("\n").find((l) => l.startsWith(`${name} `)).split(" ")[1]);
  await waitText(page, '[data-stat="health"]', "ok");
  await waitText(page, '[data-stat="topics"]', fmt(metric("seglog_topics")));
  await waitText(page, '[data-stat="records_appended"]', fmt(metric("seglog_records_appended_total")));
  check((await text(page, '[data-stat="uptime"]')).endsWith(" s") || (await text(page, '[data-stat="uptime"]')).includes("min"), "uptime is shown");
  // Traffic while the page samples: the charts gain points and the
  // produce rate goes above zero.
  const before = await points(page, "rates");
  for (let i = 0; i < 6; i += 1) {
    await api("POST", `/topics/${expect.topic}`, { records: Array.from({ length: 50 }, (_, n) => ({ value: { load: i * 50 + n } })) });
    await page.waitForTimeout(350);
  }
  await waitPoints(page, "rates", before + 3);
  await waitPoints(page, "latency", before + 3);
  const appended = metric("seglog_records_appended_total") + 300;
  await waitText(page, '[data-stat="records_appended"]', fmt(appended));
  const drawn = await page.evaluate(() => [...document.querySelectorAll("[data-chart] canvas")].length);
  check(drawn === 3, `three charts drawn, not ${drawn}`);
  const legend = await text(page, '[data-chart="rates"] .u-legend');
  check(legend.includes("produced") && legend.includes("fetched"), `the rates legend names its series: ${legend}`);
  await screenshot(page, "overview");
}

async function topics(page) {
  step("topics");
  await page.goto(`${base}/ui/#/topics`);
  const described = await api("GET", `/topics/${expect.topic}`);
  const records = described.partitions.reduce((s, p) => s + p.end_offset - p.log_start_offset, 0);
  const row = page.locator('[data-table="topics"] tbody tr', { hasText: expect.topic });
  await row.first().waitFor();
  const cells = (await row.first().locator("td").allTextContents()).map((c) => c.trim());
  check(cells[0] === expect.topic, `first cell is the topic name: ${cells}`);
  check(cells[1] === fmt(described.partitions.length), `partitions ${cells[1]}`);
  check(cells[2] === fmt(records), `records ${cells[2]}, not ${records}`);
  check(cells[4] === "server default" || cells[4].length > 0, `retention ${cells[4]}`);
  await screenshot(page, "topics");

  step("one topic");
  await page.goto(`${base}/ui/#/topics/${expect.topic}`);
  await page.waitForSelector('[data-table="partitions"]');
  await waitText(page, '[data-fact="records"]', fmt(records));
  const rows = await page.locator('[data-table="partitions"] tbody tr').all();
  check(rows.length === described.partitions.length, `one row per partition: ${rows.length}`);
  for (const [i, p] of described.partitions.entries()) {
    const c = (await rows[i].locator("td").allTextContents()).map((x) => x.trim());
    check(c[0] === String(p.partition) && c[1] === fmt(p.log_start_offset) && c[2] === fmt(p.end_offset),
      `partition ${p.partition}: ${c} vs ${JSON.stringify(p)}`);
  }
  await screenshot(page, "topic");
}

async function recordsPage(page) {
  step("records: page through a partition");
  const { topic, partition } = expect;
  const state = (await api("GET", `/topics/${topic}`)).partitions[partition];
  const limit = 7;
  await page.goto(`${base}/ui/#/topics/${topic}/${partition}?offset=0&limit=${limit}`);
  const seen = [];
  for (;;) {
    await page.waitForSelector("ol.records li.record, ol.records:empty");
    const offsets = await page.locator("li.record").evaluateAll((els) => els.map((e) => Number(e.dataset.offset)));
    check(offsets.length > 0 && offsets.length <= limit, `a page holds 1 to ${limit} records: ${offsets}`);
    seen.push(...offsets);
    const next = page.locator('[data-page="next"]');
    if (await next.isDisabled()) break;
    const last = offsets[offsets.length - 1];
    await next.click();
    await page.waitForFunction((after) => {
      const first = document.querySelector("li.record");
      return first && Number(first.dataset.offset) === after;
    }, last + 1);
  }
  const want = Array.from({ length: state.end_offset - state.log_start_offset }, (_, i) => state.log_start_offset + i);
  check(JSON.stringify(seen) === JSON.stringify(want), `paged through every offset once, in order: ${seen}`);
  // Back one page.
  await page.locator('[data-page="prev"]').click();
  await page.waitForFunction((lim) => document.querySelectorAll("li.record").length === lim, limit);

  // The values: JSON pretty-printed; markup shown as text, never made elements.
  await page.goto(`${base}/ui/#/topics/${topic}/${partition}?offset=${expect.html_offset}&limit=1`);
  await page.waitForSelector("li.record");
  const value = await text(page, "li.record pre.value");
  check(value === JSON.stringify(expect.html_value, null, 2), `the value is pretty-printed JSON: ${value}`);
  check(await page.locator("ol.records img, ol.records script, ol.records b").count() === 0, "no markup from a record became an element");
  check((await text(page, "li.record .key code")) === expect.html_key, "the key is shown as its text");

  // From a time: the first record at or after it.
  await page.goto(`${base}/ui/#/topics/${topic}/${partition}?time=${expect.time_ms}&limit=3`);
  await page.waitForSelector("li.record");
  const fromTime = Number(await page.locator("li.record").first().getAttribute("data-offset"));
  check(fromTime === expect.time_offset, `from time ${expect.time_ms}: offset ${fromTime}, not ${expect.time_offset}`);
  await page.goto(`${base}/ui/#/topics/${topic}/${partition}?offset=${expect.html_offset}&limit=5`);
  await page.waitForSelector("li.record");
  await screenshot(page, "records");

  step("records: Kafka bytes as text or base64, headers");
  await page.goto(`${base}/ui/#/topics/${expect.kafka_topic}/0?offset=0`);
  await page.waitForSelector("li.record");
  const kafka = await page.locator("li.record").first();
  const badges = await kafka.locator(".badge").allTextContents();
  check(badges.includes("base64"), `binary bytes are labelled base64: ${badges}`);
  check(badges.includes("text"), `UTF-8 bytes are labelled text: ${badges}`);
  const headers = await kafka.locator("ul.headers li").allTextContents();
  check(headers.some((hd) => hd.includes(expect.kafka_header)), `the header is shown: ${headers}`);
  await screenshot(page, "records-kafka");
}

async function groups(page) {
  step("groups");
  const { group, topic } = expect;
  const described = await api("GET", `/groups/${group}`);
  await page.goto(`${base}/ui/#/groups`);
  const row = page.locator('[data-table="groups"] tbody tr', { hasText: group });
  await row.first().waitFor();
  const cells = (await row.first().locator("td").allTextContents()).map((c) => c.trim());
  check(cells[0] === group && cells[2] === fmt(described.partitions.length) && cells[3] === fmt(described.lag),
    `group row ${cells} vs ${described.partitions.length} partitions, lag ${described.lag}`);
  await screenshot(page, "groups");

  step("one group: lag per partition, and its chart over time");
  await page.goto(`${base}/ui/#/groups/${group}`);
  await waitText(page, '[data-fact="lag"]', fmt(described.lag));
  const rows = await page.locator('[data-table="group-partitions"] tbody tr').all();
  check(rows.length === described.partitions.length, `a row per committed partition: ${rows.length}`);
  for (const [i, p] of described.partitions.entries()) {
    const c = (await rows[i].locator("td").allTextContents()).map((x) => x.trim());
    const committed = p.offset === null ? "–" : fmt(p.offset);
    check(c[0] === p.topic && c[1] === String(p.partition) && c[2] === committed && c[5] === fmt(p.lag),
      `group partition ${c} vs ${JSON.stringify(p)}`);
  }
  await waitPoints(page, "lag", 2);
  // The group catches up on one partition: the lag falls, the chart moves.
  const first = described.partitions[0];
  await api("POST", `/groups/${group}/offsets`, { offsets: [{ topic: first.topic, partition: first.partition, offset: first.end_offset }] });
  const after = await api("GET", `/groups/${group}`);
  check(after.lag < described.lag, "the commit lowered the lag");
  const chartPoints = await points(page, "lag");
  await waitText(page, '[data-fact="lag"]', fmt(after.lag));
  await waitPoints(page, "lag", chartPoints + 1);
  await screenshot(page, "group");
  check(topic.length > 0, "a topic");
}

async function writable(page) {
  step("writable console: create and delete a topic from the page");
  await page.goto(`${base}/ui/#/topics`);
  const form = page.locator('[data-form="create-topic"]');
  await form.locator('input[name="name"]').fill("made-in-console");
  await form.locator('input[name="partitions"]').fill("2");
  await form.locator('button[type="submit"]').click();
  await page.waitForSelector('[data-table="partitions"]');
  const made = await api("GET", "/topics/made-in-console");
  check(made.partitions.length === 2, "the topic was created with two partitions");
  const remove = page.locator('[data-delete="made-in-console"]');
  await remove.click();
  await remove.click();
  await page.waitForFunction(() => location.hash === "#/topics");
  const names = await api("GET", "/topics");
  check(!names.includes("made-in-console"), `the topic was deleted: ${names}`);
}

// A page of another site (localhost is another site than 127.0.0.1) posts
// to the writable console's server as a form could, without asking first
// (text/plain, no-cors), and tries a DELETE: neither changes anything. The
// page is the read-only server's /health, a document without the console's
// Content-Security-Policy (which would keep the page itself from sending).
async function crossSite(context) {
  step("a page of another site cannot write (cross-site request forgery)");
  const other = new URL(readonlyBase);
  other.hostname = "localhost";
  const page = await context.newPage();
  try {
    await page.goto(`${other.origin}/health`);
    const statuses = await page.evaluate(async (target) => {
      const forged = await fetch(`${target}/topics`, { method: "POST", mode: "no-cors",
        headers: { "content-type": "text/plain" }, body: JSON.stringify({ name: "forged", partitions: 1 }) });
      const deleted = await fetch(`${target}/topics/${encodeURIComponent("made-by-test")}`, { method: "DELETE" })
        .then((r) => r.status, (e) => `refused: ${e.message}`);
      return [forged.type, deleted];
    }, base);
    step(`  the browser's answers: ${statuses}`);
  } finally {
    await page.close();
  }
  const names = await api("GET", "/topics");
  check(!names.includes("forged"), `a cross-site POST made a topic: ${names}`);
  check(names.includes("made-by-test"), `a cross-site DELETE removed a topic: ${names}`);
}

async function readonly(page) {
  step("read-only console: no create form, no delete buttons");
  await page.goto(`${readonlyBase}/ui/#/topics`);
  await page.waitForSelector("#footer:has-text('read-only')");
  await page.waitForSelector("#main h1");
  await page.waitForFunction(() => !document.querySelector("#main p.muted") || !document.querySelector("#main").textContent.includes("Loading"));
  check(await page.locator('[data-form="create-topic"]').count() === 0, "no create form");
  check(await page.locator("[data-delete]").count() === 0, "no delete button");
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "seglog-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: DESKTOP,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") errors.push(`console ${m.type()}: ${m.text()}`); });
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("requestfailed", (r) => {
      // A page left while its requests ran aborts them: not a failure.
      const why = r.failure() ? r.failure().errorText : "";
      if (why !== "net::ERR_ABORTED") errors.push(`request failed: ${r.url()} ${why}`);
    });
    page.on("request", (r) => {
      const url = new URL(r.url());
      if (url.protocol !== "data:" && url.origin !== new URL(base).origin && url.origin !== new URL(readonlyBase).origin) {
        errors.push(`a request left the server: ${r.url()}`);
      }
    });
    await overview(page);
    await topics(page);
    await recordsPage(page);
    await groups(page);
    await writable(page);
    await api("POST", "/topics", { name: "made-by-test", partitions: 1 });
    await crossSite(context);
    await readonly(page);
    const banner = await page.locator("#error:not([hidden])").count();
    check(banner === 0, `no error banner: ${await page.locator("#error").textContent()}`);
    check(errors.length === 0, `the browser logged no error or warning:\n${errors.join("\n")}`);
    step("every check passed");
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e.stack || String(e));
  if (errors.length > 0) console.error(errors.join("\n"));
  process.exit(1);
});
