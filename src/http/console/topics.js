// Topics: every topic with its partitions, records, size and retention
// (GET /topics, then GET /topics/T for each), and one topic's partitions
// with their log start, end offset and size. With --console-writable, a
// form creates topics and each topic has a delete button.

import { del, getJson, postJson, topicPath } from "./api.js";
import { bytes, count, h, link, replace, retentionBytes, retentionMs, route, table, time } from "./dom.js";

/** How often the lists refresh while shown. */
const REFRESH_EVERY_MS = 5000;

/** Topics described on the list page: each costs a request per refresh,
 * and a page of more rows than this is not read by a person anyway. */
export const TOPICS_SHOWN_MAX = 200;

const recordsOf = (partitions) => partitions.reduce((sum, p) => sum + (p.end_offset - p.log_start_offset), 0);
const bytesOf = (partitions) => partitions.reduce((sum, p) => sum + p.bytes, 0);

export function renderList(main, params, ctx) {
  const list = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const updated = h("span", { class: "muted" });
  replace(main,
    h("h1", {}, "Topics ", updated),
    ctx.config.writable ? createForm(ctx) : null,
    list);
  return ctx.every(REFRESH_EVERY_MS, async () => {
    const names = await getJson("/topics");
    const shown = names.slice(0, TOPICS_SHOWN_MAX);
    const topics = await Promise.all(shown.map((name) => getJson(topicPath(name)).catch(() => null)));
    const rows = topics.filter((t) => t !== null).map((t) => [
      link(t.name, "topics", t.name),
      count(t.partitions.length),
      count(recordsOf(t.partitions)),
      bytes(bytesOf(t.partitions)),
      retentionMs(t.retention_ms),
      retentionBytes(t.retention_bytes),
      ctx.config.writable ? deleteButton(t.name, ctx) : null,
    ]);
    const headings = [["Topic"], ["Partitions", "num"], ["Records", "num"], ["Size", "num"], ["Retention (age)"], ["Retention (size)"]];
    if (ctx.config.writable) headings.push([""]);
    // A delete waiting for its second click keeps the table as it is.
    if (list.querySelector("button.armed")) return;
    replace(list,
      names.length === 0 ? h("p", { class: "muted" }, "No topics yet.") : table(headings, rows, { "data-table": "topics" }),
      names.length > shown.length ? h("p", { class: "muted" }, `The first ${shown.length} of ${count(names.length)} topics.`) : null);
    updated.textContent = `· ${count(names.length)}`;
  });
}

export function renderTopic(main, params, ctx) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  replace(main, h("p", { class: "crumbs" }, link("Topics", "topics"), " / ", params.topic), body);
  return ctx.every(REFRESH_EVERY_MS, async () => {
    const t = await getJson(topicPath(params.topic));
    const rows = t.partitions.map((p) => [
      link(String(p.partition), "topics", t.name, p.partition),
      count(p.log_start_offset),
      count(p.end_offset),
      count(p.end_offset - p.log_start_offset),
      bytes(p.bytes),
      link("records", "topics", t.name, p.partition),
    ]);
    if (body.querySelector("button.armed")) return;
    replace(body,
      h("h1", {}, t.name),
      h("dl", { class: "facts" },
        h("dt", {}, "Partitions"), h("dd", { "data-fact": "partitions" }, count(t.partitions.length)),
        h("dt", {}, "Records"), h("dd", { "data-fact": "records" }, count(recordsOf(t.partitions))),
        h("dt", {}, "Size"), h("dd", { "data-fact": "bytes" }, bytes(bytesOf(t.partitions))),
        h("dt", {}, "Retention"), h("dd", {}, `${retentionMs(t.retention_ms)}; ${retentionBytes(t.retention_bytes)}`),
        h("dt", {}, "Created"), h("dd", {}, time(t.created_ms))),
      table([["Partition", "num"], ["Log start", "num"], ["End offset", "num"], ["Records", "num"], ["Size", "num"], [""]],
        rows, { "data-table": "partitions" }),
      ctx.config.writable ? h("p", {}, deleteButton(t.name, ctx, () => { location.hash = route("topics"); })) : null);
  });
}

/** A button that deletes a topic after a second click (no browser dialog:
 * it works the same on a phone and under test). */
function deleteButton(name, ctx, then) {
  const button = h("button", { class: "danger", type: "button", "data-delete": name }, "Delete");
  let armed = false;
  button.addEventListener("click", async () => {
    if (!armed) {
      armed = true;
      button.classList.add("armed");
      button.textContent = `Delete ${name} and its records?`;
      return;
    }
    button.disabled = true;
    try {
      await del(topicPath(name));
      if (then) then();
      else button.closest("tr").remove();
    } catch (e) {
      ctx.error(e);
      button.disabled = false;
    }
  });
  return button;
}

function createForm(ctx) {
  const name = h("input", { name: "name", required: true, placeholder: "orders", pattern: "[A-Za-z0-9._\\-]{1,249}", autocomplete: "off" });
  const partitions = h("input", { name: "partitions", type: "number", min: 1, max: 4096, value: "3" });
  const ageMs = h("input", { name: "retention_ms", type: "number", min: 1, placeholder: "server default" });
  const sizeBytes = h("input", { name: "retention_bytes", type: "number", min: 1, placeholder: "server default" });
  const status = h("span", { class: "muted", role: "status" });
  const form = h("form", { class: "create", "data-form": "create-topic" },
    h("label", {}, "Name ", name),
    h("label", {}, "Partitions ", partitions),
    h("label", {}, "Retention ms ", ageMs),
    h("label", {}, "Retention bytes ", sizeBytes),
    h("button", { type: "submit" }, "Create topic"),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: name.value, partitions: Number(partitions.value) };
    if (ageMs.value) body.retention_ms = Number(ageMs.value);
    if (sizeBytes.value) body.retention_bytes = Number(sizeBytes.value);
    try {
      await postJson("/topics", body);
      ctx.clearError();
      status.textContent = `Created ${body.name}.`;
      location.hash = route("topics", body.name);
    } catch (e) {
      ctx.error(e);
    }
  });
  return form;
}
