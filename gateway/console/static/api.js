// The token and every call to the gateway. The token comes from ?token= on first load (then it is
// removed from the address bar and kept in sessionStorage, i.e. this tab only) or from the login box.
const KEY = "gbgate.token";

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "";
    this.field = err.field || null;
    this.detail = err;
  }
}

/** Takes ?token= (and ?lang=, returned) out of the address bar so it is not left in history. */
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get("token");
  const lang = url.searchParams.get("lang");
  if (token) sessionStorage.setItem(KEY, token);
  if (token || lang) {
    url.searchParams.delete("token");
    url.searchParams.delete("lang");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  return lang;
}

export function getToken() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(token) { sessionStorage.setItem(KEY, token); }
export function clearToken() { sessionStorage.removeItem(KEY); }

/** A URL for players that cannot set headers (streams, snapshots, report downloads). */
export function withToken(path) {
  const sep = path.includes("?") ? "&" : "?";
  return `${path}${sep}token=${encodeURIComponent(getToken())}`;
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** fetch + JSON with the bearer token; throws ApiError (status 0 when the network failed). */
export async function api(path, { method = "GET", body, raw = false, headers = {} } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${getToken()}`, ...headers } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: "network", message: String(e) } });
  }
  if (raw) return resp;
  let data = null;
  const type = resp.headers.get("Content-Type") || "";
  if (type.includes("json")) {
    try { data = await resp.json(); } catch { data = null; }
  }
  if (!resp.ok) {
    const error = new ApiError(resp.status, data);
    if (resp.status === 401) onUnauthorized(error);
    throw error;
  }
  return data;
}
