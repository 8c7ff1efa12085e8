// The API as the dashboard uses it: JSON requests with the session's token (renewed
// with the refresh token when it expires) and server-sent event streams.

const STORAGE_KEY = "fieldline.session";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let signedOut = () => {};

export const session = {
  get() {
    try {
      return JSON.parse(localStorage.getItem(STORAGE_KEY));
    } catch {
      return null;
    }
  },
  set(value) {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(value));
  },
  clear() {
    localStorage.removeItem(STORAGE_KEY);
  },
  /** Called when the session ends on its own (refresh refused): show the sign-in page. */
  onSignedOut(callback) {
    signedOut = callback;
  },
};

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(response.status, body.error.code, body.error.message);
  } catch {
    // not JSON: fall through
  }
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

function url(path, query) {
  const target = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (Array.isArray(value)) for (const each of value) target.searchParams.append(key, each);
    else if (value !== undefined && value !== null && value !== "") target.searchParams.set(key, value);
  }
  return target;
}

export async function signIn(username, password) {
  const response = await fetch("/api/v1/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw await errorOf(response);
  const tokens = await response.json();
  session.set({ access: tokens.access_token, refresh: tokens.refresh_token });
  const me = await api("GET", "/api/v1/auth/me");
  session.set({ ...session.get(), user: me });
  return me;
}

/** End the session on the server too (its tokens stop working), then forget it here. */
export function signOut() {
  const current = session.get();
  session.clear();
  if (!current || !current.refresh) return Promise.resolve();
  return fetch("/api/v1/auth/logout", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: current.refresh }),
  }).catch(() => {
    // Unreachable: the tokens still expire on their own.
  });
}

let refreshing = null;

/** A new access token from the refresh token; one request at a time however many need it. */
async function refreshAccess() {
  if (!refreshing) {
    refreshing = (async () => {
      const current = session.get();
      if (!current || !current.refresh) return false;
      const response = await fetch("/api/v1/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refresh }),
      });
      if (!response.ok) return false;
      const { access_token: access } = await response.json();
      session.set({ ...session.get(), access });
      return true;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function authorized(path, init) {
  for (let attempt = 0; attempt < 2; attempt += 1) {
    const current = session.get();
    const headers = { ...(init.headers || {}) };
    if (current && current.access) headers.Authorization = `Bearer ${current.access}`;
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401 || attempt === 1) return response;
    if (!(await refreshAccess())) {
      session.clear();
      signedOut();
      return response;
    }
  }
  throw new Error("unreachable");
}

/**
 * api("GET", "/api/v1/devices", {query: {limit: 10}}) → parsed JSON (null for 204).
 * A FormData body is sent as multipart (a file upload); any other body as JSON.
 */
export async function api(method, path, { query, body, signal } = {}) {
  const init = { method, signal, headers: {} };
  if (body instanceof FormData) {
    init.body = body; // the browser writes the multipart boundary into Content-Type
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await authorized(url(path, query), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "fieldline cannot be reached: check the connection");
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/**
 * Download what `path` answers (an export) as a file named as the server says: the
 * session's token goes with the request, which a plain link could not send.
 */
export async function download(path, query) {
  const response = await authorized(url(path, query), { method: "GET", headers: {} });
  if (!response.ok) throw await errorOf(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || "export";
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return { name, bytes: blob.size };
}

/**
 * Follow a server-sent event stream: handlers[eventName](data) for each event.
 * Reconnects by itself (renewing the token when the server says it expired);
 * onState(true|false) tells whether the stream is live. Returns a function that stops it.
 */
export function stream(path, handlers, onState = () => {}) {
  const controller = new AbortController();
  let delay = 1000;

  async function readOnce() {
    const response = await authorized(url(path), {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    if (!response.ok) throw await errorOf(response);
    onState(true);
    delay = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += value.replaceAll("\r\n", "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (!data.length) continue; // a keep-alive comment
        if (event === "expired") {
          await refreshAccess();
          return "expired";
        }
        const handler = handlers[event];
        if (handler) handler(JSON.parse(data.join("\n")));
        if (event === "gone") return "gone";
      }
    }
  }

  (async () => {
    while (!controller.signal.aborted) {
      try {
        const outcome = await readOnce();
        if (outcome === "gone") return;
        if (outcome === "expired") continue;
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && [401, 403, 404].includes(error.status)) {
          onState(false);
          if (handlers.error) handlers.error(error);
          return;
        }
      }
      onState(false);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();

  return () => controller.abort();
}
