// Building the page's elements, and formatting numbers for people.
//
// Everything that comes from the server goes into the document as text
// (text nodes, attribute values), never as markup: record keys and values
// are whatever producers sent. No function here takes HTML.

/** An element: `h("a", {href: "#/"}, "text", child, [more])`. Attributes
 * named `on*` take a function (an event listener); `class` sets the class
 * name; any other is set with setAttribute, which treats the value as text.
 * Children are nodes or strings (made text nodes); null and false are
 * skipped, arrays flattened. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "value") {
      el.value = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** A table: `headings` are [text, "num"?] pairs; rows are arrays of cells
 * (strings or nodes). Wrapped in a box that scrolls sideways on a narrow
 * screen. */
export function table(headings, rows, attrs) {
  const numeric = headings.map(([, kind]) => kind === "num");
  return h("div", { class: "scroll" },
    h("table", attrs || {},
      h("thead", {}, h("tr", {}, headings.map(([text], i) =>
        h("th", { class: numeric[i] ? "num" : null }, text)))),
      h("tbody", {}, rows.map((row) =>
        h("tr", {}, row.map((cell, i) =>
          h("td", { class: numeric[i] ? "num" : null }, cell)))))));
}

/** A link inside the console, to `#/` plus the path's parts, each encoded. */
export function link(text, ...parts) {
  return h("a", { href: route(...parts) }, text);
}

export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(String(p))).join("/");
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** 1234567 as "1,234,567". */
export function count(n) {
  return n === null || n === undefined ? "—" : integer.format(n);
}

/** Bytes with a binary unit: "0 B", "12.3 KiB", "1.5 GiB". */
export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** A duration in seconds as "3 d 4 h", "5 min 2 s", "42 s". */
export function duration(seconds) {
  const s = Math.floor(seconds);
  const parts = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  const out = [];
  let rest = s;
  for (const [size, unit] of parts) {
    if (rest >= size || (unit === "s" && out.length === 0)) {
      out.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    }
    if (out.length === 2) break;
  }
  return out.join(" ");
}

/** A retention limit: milliseconds as a duration, or "server default". */
export function retentionMs(ms) {
  return ms === null || ms === undefined ? "server default" : duration(ms / 1000);
}

export function retentionBytes(n) {
  return n === null || n === undefined ? "server default" : bytes(n);
}

/** Milliseconds since the epoch as an ISO date and time (UTC). */
export function time(ms) {
  if (ms === null || ms === undefined || ms < 0) return "—";
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? String(ms) : date.toISOString().replace(".000Z", "Z");
}
