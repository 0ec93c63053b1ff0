// Requests to the server's HTTP API, the same routes every client uses.
// An error reply ({"error_code", "message"}) becomes an ApiError.

export class ApiError extends Error {
  constructor(status, code, message, nextOffset = null) {
    super(message);
    this.status = status;
    this.code = code;
    /** Where a search by time that stopped at its bound goes on (42201). */
    this.nextOffset = nextOffset;
  }
}

/** The code of a search by time that read its bound of bytes. */
export const SEARCH_STOPPED = 42201;

async function request(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, null, `cannot reach the server (${e.message}): is seglog still running?`);
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      if (response.ok) throw new ApiError(response.status, null, `${path}: not JSON: ${e.message}`);
    }
  }
  if (!response.ok) {
    const message = parsed && parsed.message ? parsed.message : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, parsed ? parsed.error_code : null, message,
      parsed && Number.isInteger(parsed.next_offset) ? parsed.next_offset : null);
  }
  return parsed;
}

export const getJson = (path) => request("GET", path);
export const postJson = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

/** The Prometheus text of /metrics. */
export async function getMetricsText() {
  const response = await fetch("/metrics");
  if (!response.ok) throw new ApiError(response.status, null, `/metrics: ${response.status}`);
  return response.text();
}

/** /health: {ok, message}; a 503 is an answer (the store took a failed
 * sync), not an error of the page. */
export async function getHealth() {
  try {
    const response = await fetch("/health");
    const body = await response.json();
    return { ok: response.ok, message: body.message || body.status };
  } catch (e) {
    return { ok: false, message: `unreachable: ${e.message}` };
  }
}

export function topicPath(name) {
  return `/topics/${encodeURIComponent(name)}`;
}

export function groupPath(name) {
  return `/groups/${encodeURIComponent(name)}`;
}
