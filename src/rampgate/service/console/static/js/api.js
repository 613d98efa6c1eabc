// Calls to the rampgate admin API with the session cookie and the CSRF token.

const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

/** An error answer of the API: `field` and `message` come from its JSON body when it has one. */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    super(body?.message || body?.detail?.message || (typeof body?.detail === "string" ? body.detail : fallback));
    this.status = status;
    this.field = body?.field ?? body?.detail?.field ?? null;
    this.body = body;
  }
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { message: text };
  }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const options = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = csrfToken;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }

  const response = await fetch(path, options);
  const payload = await readBody(response);
  if (response.status === 401) {
    // The session expired or the server restarted with other tokens: back to the sign-in form.
    window.location.assign("/console");
  }
  if (!response.ok) {
    throw new ApiError(response.status, payload, `${method} ${path} failed with HTTP ${response.status}`);
  }
  return payload;
}

export const apiGet = (path) => request("GET", path);
export const apiPost = (path, body = {}) => request("POST", path, body);
export const apiPatch = (path, body) => request("PATCH", path, body);
export const apiPut = (path, body) => request("PUT", path, body);
export const apiDelete = (path) => request("DELETE", path);

/** Build a query string from the entries whose value is set. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
