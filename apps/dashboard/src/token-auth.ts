import { TokenRegistry, isScoped, roleAllows, type TokenEntry, type TokenRole, watchTokenFile } from "@trellis/api";
import { ConfigError, type Env, readOptionalString } from "@trellis/config";
import { type StateManager, withActor } from "@trellis/db";
import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";
import { checkBasicAuth } from "./basic-auth.js";

/** The cookie the login page sets: the token itself, httpOnly (page scripts cannot read it), SameSite=Strict. */
export const TOKEN_COOKIE = "trellis_token";

/** The dashboard's token settings: the api's `API_TOKENS_FILE` and `API_TOKEN`, read the same way. */
export interface DashboardTokenSettings {
  tokensFile?: { path: string; entries: TokenEntry[] } | undefined;
  apiToken?: string | undefined;
}

/** Reads `API_TOKENS_FILE` (parsed at start: a bad one is a ConfigError naming the entry) and `API_TOKEN`. */
export function readDashboardTokenSettings(
  env: Env,
  readText: (path: string) => string,
  parse: (text: string) => TokenEntry[],
): DashboardTokenSettings {
  const path = readOptionalString(env, "API_TOKENS_FILE");
  let tokensFile: DashboardTokenSettings["tokensFile"];
  if (path !== undefined) {
    try {
      tokensFile = { path, entries: parse(readText(path)) };
    } catch (error) {
      throw ConfigError.invalid("API_TOKENS_FILE", error instanceof Error ? error.message : String(error));
    }
  }
  return { tokensFile, apiToken: readOptionalString(env, "API_TOKEN") };
}

/** Who is signed in: a token, or the basic-auth user (all powers, as before tokens). */
type Principal = { kind: "token"; entry: TokenEntry } | { kind: "basic" } | { kind: "open" };

function cookieToken(req: Request): string | undefined {
  for (const part of (req.headers.cookie ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === TOKEN_COOKIE) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** What a dashboard request needs: `/queues` admin, writes under `/api` write (limits and schedules admin). */
function neededRole(method: string, path: string): TokenRole {
  if (path === "/queues" || path.startsWith("/queues/")) return "admin";
  const write = method !== "GET" && method !== "HEAD";
  if (path.startsWith("/api/limits") || path.startsWith("/api/schedules")) return write ? "admin" : "read";
  return write ? "write" : "read";
}

function loginPage(message: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Trellis · sign in</title>
<link rel="stylesheet" href="/assets/css/dashboard.css"></head><body><main class="login">
<h1>Trellis</h1><form method="post" action="/login"><label>API token
<input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button class="btn btn-primary" type="submit">Sign in</button></form>
${message === "" ? "" : `<p class="muted" role="alert">${message}</p>`}</main></body></html>`;
}

function notFound(res: Response): void {
  res.status(404).json({ error: { code: "NOT_FOUND", message: "not found" } });
}

/** Options of {@link createDashboardAuth}. */
export interface DashboardAuthOptions {
  tokens: DashboardTokenSettings;
  basic: { user: string | undefined; password: string | undefined };
  stateManager: StateManager;
  logger: Logger;
  /** How often API_TOKENS_FILE is stat-ed besides fs.watch. @default 2000 */
  pollMs?: number | undefined;
}

/**
 * The dashboard's sign-in: the api's tokens (a `Bearer` header, or the login page's httpOnly cookie) and basic auth
 * (DASHBOARD_USER) for simple setups; neither configured: open. A token's role decides what it may do (read tokens get
 * 403 on writes and see no write buttons; Bull Board needs admin), its labels what it sees (other workflows are 404
 * as missing ones), and its name is the `actor` of the events its actions cause.
 */
export function createDashboardAuth(options: DashboardAuthOptions): { router: express.Router; close(): void } {
  const { tokens, basic, stateManager } = options;
  const registry =
    tokens.tokensFile === undefined && tokens.apiToken === undefined
      ? undefined
      : new TokenRegistry(tokens.tokensFile?.entries ?? [], tokens.apiToken);
  const stop =
    registry !== undefined && tokens.tokensFile !== undefined
      ? watchTokenFile(tokens.tokensFile.path, registry, options.logger, { pollMs: options.pollMs })
      : undefined;
  const router = express.Router();

  router.get("/login", (_req, res) => {
    res.set("cache-control", "no-store").type("html").send(loginPage(""));
  });
  router.post("/login", express.urlencoded({ extended: false, limit: "8kb" }), (req, res) => {
    const token = typeof req.body?.token === "string" ? req.body.token : "";
    if (registry === undefined || registry.lookup(token) === undefined) {
      res.status(401).type("html").send(loginPage("Unknown token."));
      return;
    }
    const secure = req.secure ? "; Secure" : "";
    res.setHeader(
      "set-cookie",
      `${TOKEN_COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200${secure}`,
    );
    res.redirect(303, "/");
  });
  router.post("/logout", (_req, res) => {
    res.setHeader("set-cookie", `${TOKEN_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`);
    res.redirect(303, "/login");
  });

  router.use((req: Request, res: Response, next: NextFunction) => {
    let principal: Principal = { kind: "open" };
    if (registry !== undefined) {
      const header = req.headers.authorization;
      const bearer = header !== undefined && /^Bearer[ \t]/i.test(header.trim());
      const entry = bearer ? registry.authenticate(header) : registry.lookup(cookieToken(req));
      if (entry !== undefined) principal = { kind: "token", entry };
      else if (req.path.startsWith("/assets/")) {
        // The UI's static files (the login page's stylesheet among them) hold no data.
        next();
        return;
      } else if (basic.user && !bearer && /^Basic /.test(header ?? "") && checkBasicAuth(req, res, basic)) {
        principal = { kind: "basic" };
      } else if (!res.headersSent) {
        const page = req.method === "GET" && !req.path.startsWith("/api") && !req.path.startsWith("/assets");
        if (page && !bearer) res.redirect(303, "/login");
        else res.status(401).json({ error: { code: "UNAUTHENTICATED", message: "a valid API token is required" } });
        return;
      } else return;
    } else if (basic.user) {
      if (!checkBasicAuth(req, res, basic)) return;
      principal = { kind: "basic" };
    }
    if (principal.kind !== "token") {
      if (req.path === "/api/me") {
        res.json({ name: principal.kind === "basic" ? basic.user : "", role: "admin", labels: {} });
        return;
      }
      next();
      return;
    }
    const { entry } = principal;
    if (req.path === "/api/me") {
      res.json({ name: entry.name, role: entry.role, labels: entry.labels });
      return;
    }
    if (req.path.startsWith("/assets/")) {
      next();
      return;
    }
    const needed = neededRole(req.method, req.path);
    // Global views: a tenant (scoped token) sees neither the limits, the schedules nor the workers.
    const global =
      req.path.startsWith("/api/limits") ||
      req.path.startsWith("/api/schedules") ||
      req.path.startsWith("/api/workers");
    if (!roleAllows(entry.role, needed) || (global && isScoped(entry))) {
      res.status(403).json({ error: { code: "PERMISSION_DENIED", message: `token ${entry.name} may not do this` } });
      return;
    }
    const run = () => void withActor(entry.name, async () => next());
    if (!isScoped(entry)) {
      run();
      return;
    }
    // A tenant: the list is narrowed to its labels (a later `key=value` term of q wins over an earlier one), and any
    // other workflow is 404 as a missing one.
    if (req.path === "/api/workflows") {
      const terms = Object.entries(entry.labels).map(([k, v]) => `${k}=${v}`);
      const q = typeof req.query.q === "string" ? req.query.q : "";
      const url = new URL(req.url, "http://dashboard");
      url.searchParams.set("q", [q, ...terms].join(" ").trim());
      req.url = `${url.pathname}${url.search}`;
      run();
      return;
    }
    const match = /^\/(?:api\/)?workflows\/([^/]+)/.exec(req.path);
    if (match === null) {
      run();
      return;
    }
    stateManager.getWorkflow(decodeURIComponent(match[1]!)).then(
      (workflow) => {
        if (Object.entries(entry.labels).every(([k, v]) => workflow.labels[k] === v)) run();
        else notFound(res);
      },
      () => notFound(res),
    );
  });
  return { router, close: () => stop?.() };
}
