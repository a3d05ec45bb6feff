// The dashboard's JSON API, as the pages call it.

/** An error answer of the API: HTTP status plus the typed error's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function parse(response) {
  let body;
  try {
    body = await response.json();
  } catch {
    body = undefined;
  }
  if (!response.ok) {
    const error = body?.error ?? {};
    throw new ApiError(response.status, error.code ?? "HTTP_ERROR", error.message ?? `HTTP ${response.status}`);
  }
  return body;
}

/** GET a JSON resource under /api. */
export async function getJson(path, params) {
  const query = params
    ? `?${new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null))}`
    : "";
  return parse(await fetch(`/api${path}${query}`, { headers: { accept: "application/json" } }));
}

/** POST to an action endpoint under /api. */
export async function postJson(path) {
  return parse(await fetch(`/api${path}`, { method: "POST", headers: { accept: "application/json" } }));
}

/** Sends a JSON body (or none) to an endpoint under /api with `method` (POST, DELETE). */
export async function sendJson(method, path, body) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  return parse(
    await fetch(`/api${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }),
  );
}

/** Every committed event of a workflow after a sequence, read page by page. */
export async function allEvents(workflowId, after = 0) {
  const events = [];
  let cursor = after;
  for (;;) {
    const page = await getJson(`/workflows/${encodeURIComponent(workflowId)}/events`, { after: cursor, limit: 1000 });
    events.push(...page.events);
    if (page.events.length < 1000) return events;
    cursor = Number(page.events[page.events.length - 1].sequence);
  }
}

// The signed-in token's role (GET /api/me) as <html data-role>: the stylesheet hides what the role may not do.
fetch("/api/me", { headers: { accept: "application/json" } })
  .then((response) => (response.ok ? response.json() : undefined))
  .then((me) => {
    if (me?.role) document.documentElement.dataset.role = me.role;
  })
  .catch(() => undefined);
