// A partition's records, a page at a time, from an offset or from a time
// (GET .../records?offset=N or ?timestamp=MS, with max_records). Keys,
// values and headers are shown as text: JSON pretty-printed, bytes that
// are UTF-8 text as that text, other bytes as base64, each labelled.

import { ApiError, SEARCH_STOPPED, getJson, topicPath } from "./api.js";
import { count, h, link, replace, route, time } from "./dom.js";

/** Records a page shows unless the address says otherwise. */
const PAGE_DEFAULT = 50;

/** Most records a page shows: a page of more is slow to lay out and
 * scrolls past what a person reads. */
export const PAGE_MAX = 500;

/** Characters of one value shown; the rest is cut with a note. A record
 * may hold up to 1 MiB, which would make the page slow to lay out. */
export const VALUE_CHARS_SHOWN_MAX = 64 * 1024;

export function render(main, params, ctx) {
  const topic = params.topic;
  const partition = Number(params.partition);
  const limit = Math.min(PAGE_MAX, Math.max(1, Number(params.limit) || PAGE_DEFAULT));
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main,
    h("p", { class: "crumbs" }, link("Topics", "topics"), " / ", link(topic, "topics", topic), ` / partition ${params.partition}`),
    body);
  load(body, topic, partition, limit, params, ctx).catch((e) => ctx.error(e));
  return () => {};
}

/** The address of a page of this partition. */
function pageRoute(topic, partition, query) {
  return `${route("topics", topic, partition)}?${new URLSearchParams(query)}`;
}

async function load(body, topic, partition, limit, params, ctx) {
  const t = await getJson(topicPath(topic));
  const state = t.partitions.find((p) => p.partition === partition);
  if (!state) {
    ctx.error(`Topic ${topic} has no partition ${params.partition} (it has ${t.partitions.length}).`);
    replace(body);
    return;
  }
  const fromTime = params.time !== undefined && params.time !== "";
  const start = fromTime ? null : Math.max(state.log_start_offset, Number(params.offset) || 0);
  const records = start !== null && start >= state.end_offset
    ? []
    : fromTime
      ? await fromTimeSearch(topic, partition, params.time, limit)
      : await getJson(`${topicPath(topic)}/partitions/${partition}/records?offset=${start}&max_records=${limit}`);
  const first = records.length > 0 ? records[0].offset : start;
  const last = records.length > 0 ? records[records.length - 1].offset : null;
  const go = (query) => { location.hash = pageRoute(topic, partition, { ...query, limit }); };

  const prev = h("button", { type: "button", "data-page": "prev", disabled: first === null || first <= state.log_start_offset,
    onclick: () => go({ offset: Math.max(state.log_start_offset, first - limit) }) }, "← Previous");
  const next = h("button", { type: "button", "data-page": "next", disabled: last === null || last + 1 >= state.end_offset,
    onclick: () => go({ offset: last + 1 }) }, "Next →");
  const newest = h("button", { type: "button", "data-page": "newest", disabled: state.end_offset === state.log_start_offset,
    onclick: () => go({ offset: Math.max(state.log_start_offset, state.end_offset - limit) }) }, "Newest");
  const oldest = h("button", { type: "button", "data-page": "oldest", disabled: state.end_offset === state.log_start_offset,
    onclick: () => go({ offset: state.log_start_offset }) }, "Oldest");

  replace(body,
    h("h1", {}, `${topic} · partition ${partition}`),
    h("p", { class: "muted" }, `Log start ${count(state.log_start_offset)} · end offset ${count(state.end_offset)} · ${count(state.end_offset - state.log_start_offset)} records`),
    seekForm(topic, partition, limit, t.partitions.length, params, go),
    h("div", { class: "pager" }, oldest, prev, next, newest),
    h("p", { class: "muted", "data-range": records.length > 0 ? `${first}-${last}` : "" },
      records.length > 0
        ? `Offsets ${count(first)} to ${count(last)} (${records.length} records)`
        : fromTime ? `No records at or after ${time(Number(params.time))}.` : "No records here."),
    h("ol", { class: "records" }, records.map(recordItem)));
}

/** A page from the first record at or after a time. The server searches a
 * bounded number of bytes per request and says where it stopped; the search
 * goes on from there, each request further into the partition. */
async function fromTimeSearch(topic, partition, time, limit) {
  let from = 0;
  for (;;) {
    const query = `timestamp=${encodeURIComponent(time)}&offset=${from}&max_records=${limit}`;
    try {
      return await getJson(`${topicPath(topic)}/partitions/${partition}/records?${query}`);
    } catch (e) {
      if (!(e instanceof ApiError) || e.code !== SEARCH_STOPPED || !(e.nextOffset > from)) throw e;
      from = e.nextOffset;
    }
  }
}

/** Where to start: an offset, or a date and time; and which partition. */
function seekForm(topic, partition, limit, partitions, params, go) {
  const offset = h("input", { name: "offset", type: "number", min: 0, value: params.offset || "", placeholder: "offset" });
  const when = h("input", { name: "time", type: "datetime-local", step: 1,
    value: params.time ? localInput(Number(params.time)) : "" });
  const choose = h("select", { name: "partition" },
    Array.from({ length: partitions }, (_, p) => h("option", { value: String(p), selected: p === partition }, `partition ${p}`)));
  choose.addEventListener("change", () => {
    location.hash = pageRoute(topic, choose.value, { offset: 0, limit });
  });
  const form = h("form", { class: "seek", "data-form": "seek" },
    choose,
    h("label", {}, "From offset ", offset),
    h("label", {}, "or from time ", when),
    h("button", { type: "submit" }, "Go"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (when.value && !offset.value) {
      go({ time: String(new Date(when.value).getTime()) });
    } else {
      go({ offset: offset.value || "0" });
    }
  });
  return form;
}

/** Milliseconds as the local date and time a datetime-local input takes. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString().slice(0, 19);
}

function recordItem(r) {
  const key = field(r.key, r.key_base64);
  const value = field(r.value, r.value_base64);
  return h("li", { class: "record", "data-offset": r.offset },
    h("div", { class: "meta" },
      h("span", { class: "offset" }, `#${r.offset}`),
      h("span", { class: "muted" }, time(r.timestamp)),
      h("span", { class: "key", "data-key": "" }, "key ", kind(key), h("code", {}, key.text))),
    r.headers && r.headers.length > 0
      ? h("ul", { class: "headers" }, r.headers.map((hd) => {
        const v = field(null, hd.value_base64);
        return h("li", {}, h("code", {}, hd.key), " = ", kind(v), h("code", {}, v.text));
      }))
      : null,
    h("pre", { class: "value", "data-value": "" }, cut(value.text)),
    value.kind !== "json" ? h("div", {}, kind(value)) : null);
}

/** A key or value for display: {kind: "json"|"text"|"base64"|"none", text}. */
function field(json, base64) {
  if (base64 !== undefined && base64 !== null) {
    const text = utf8(base64);
    return text === null ? { kind: "base64", text: base64 } : { kind: "text", text };
  }
  if (json === null || json === undefined) return { kind: "none", text: "—" };
  if (typeof json === "string") return { kind: "json", text: json };
  return { kind: "json", text: JSON.stringify(json, null, 2) };
}

/** Base64 bytes as text when they are valid UTF-8 without control
 * characters other than tab and newlines; else null. */
function utf8(base64) {
  try {
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    return /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text) ? null : text;
  } catch {
    return null;
  }
}

function kind(field) {
  return field.kind === "json" || field.kind === "none" ? null : h("span", { class: `badge ${field.kind}` }, field.kind);
}

function cut(text) {
  return text.length <= VALUE_CHARS_SHOWN_MAX
    ? text
    : `${text.slice(0, VALUE_CHARS_SHOWN_MAX)}\n… (${count(text.length - VALUE_CHARS_SHOWN_MAX)} more characters)`;
}
