import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseTokenFile, tokenSha256 } from "@trellis/api";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DashboardFixture, node, startDashboard } from "./fixture.js";

const TOKENS = [
  { name: "viewer", token: "dash-read", role: "read" },
  { name: "operator", token: "dash-write", role: "write" },
  { name: "boss", token: "dash-admin", role: "admin" },
  { name: "acme", token: "dash-acme", role: "write", labels: { tenant: "acme" } },
];

let f: DashboardFixture;
let dir: string;
let mine: string;
let theirs: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "trellis-dash-tokens-"));
  const path = join(dir, "tokens.yaml");
  const text = JSON.stringify(
    TOKENS.map((t) => ({
      name: t.name,
      token_sha256: tokenSha256(t.token),
      role: t.role,
      ...(t.labels ? { labels: t.labels } : {}),
    })),
  );
  writeFileSync(path, text);
  f = await startDashboard("dashtokens", { tokens: { tokensFile: { path, entries: parseTokenFile(text) } } });
  mine = (await f.stateManager.createWorkflow({ name: "m", labels: { tenant: "acme" }, nodes: [node("a")] })).workflow
    .id;
  theirs = (await f.stateManager.createWorkflow({ name: "t", labels: { tenant: "globex" }, nodes: [node("a")] }))
    .workflow.id;
});

afterAll(async () => {
  await f?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe("dashboard sign-in with the api's tokens", () => {
  it("refuses requests without a token: pages go to /login, the API answers 401", async () => {
    const page = await fetch(`${f.baseUrl}/`, { redirect: "manual" });
    expect(page.status).toBe(303);
    expect(page.headers.get("location")).toBe("/login");
    expect((await fetch(`${f.baseUrl}/api/workflows`)).status).toBe(401);
    expect((await fetch(`${f.baseUrl}/api/workflows`, { headers: bearer("nope") })).status).toBe(401);
    expect((await fetch(`${f.baseUrl}/login`)).status).toBe(200);
  });

  it("logs in with a token into an httpOnly cookie that then authenticates", async () => {
    const bad = await fetch(`${f.baseUrl}/login`, {
      method: "POST",
      body: new URLSearchParams({ token: "wrong" }),
      redirect: "manual",
    });
    expect(bad.status).toBe(401);
    const login = await fetch(`${f.baseUrl}/login`, {
      method: "POST",
      body: new URLSearchParams({ token: "dash-read" }),
      redirect: "manual",
    });
    expect(login.status).toBe(303);
    const cookie = login.headers.get("set-cookie")!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const me = await fetch(`${f.baseUrl}/api/me`, { headers: { cookie: cookie.split(";")[0]! } });
    expect(await me.json()).toEqual({ name: "viewer", role: "read", labels: {} });
  });

  it("refuses writes to read tokens (403, nothing changed), Bull Board to all but admin", async () => {
    const cancel = (token: string) =>
      fetch(`${f.baseUrl}/api/workflows/${mine}/actions/cancel`, { method: "POST", headers: bearer(token) });
    const before = await f.stateManager.listEvents(mine, 0);
    const response = await cancel("dash-read");
    expect(response.status).toBe(403);
    expect(await f.stateManager.listEvents(mine, 0)).toEqual(before);
    for (const token of ["dash-read", "dash-write"]) {
      expect((await fetch(`${f.baseUrl}/queues`, { headers: bearer(token) })).status, token).toBe(403);
    }
    const board = await fetch(`${f.baseUrl}/queues`, { headers: bearer("dash-admin") });
    expect(board.status).toBe(200);
    await board.arrayBuffer();
    const limit = await fetch(`${f.baseUrl}/api/limits`, {
      method: "POST",
      headers: { ...bearer("dash-write"), "content-type": "application/json" },
      body: JSON.stringify({ limit: { key: "model:x", maxConcurrency: 1 } }),
    });
    expect(limit.status).toBe(403);
  });

  it("shows a tenant only its workflows; others are 404 as missing ones", async () => {
    const list = await fetch(`${f.baseUrl}/api/workflows?q=tenant%3Dglobex`, { headers: bearer("dash-acme") });
    const ids = ((await list.json()) as { workflows: { id: string }[] }).workflows.map((w) => w.id);
    expect(ids).toEqual([mine]);
    const all = await fetch(`${f.baseUrl}/api/workflows`, { headers: bearer("dash-acme") });
    expect(((await all.json()) as { workflows: { id: string }[] }).workflows.map((w) => w.id)).toEqual([mine]);
    for (const path of [`/api/workflows/${theirs}`, `/api/workflows/${theirs}/events`]) {
      const foreign = await fetch(`${f.baseUrl}${path}`, { headers: bearer("dash-acme") });
      const missing = await fetch(`${f.baseUrl}${path.replace(theirs, "00000000-0000-4000-8000-000000000000")}`, {
        headers: bearer("dash-acme"),
      });
      expect(foreign.status, path).toBe(404);
      expect(await foreign.text()).toBe(await missing.text());
    }
    expect((await fetch(`${f.baseUrl}/api/workflows/${mine}`, { headers: bearer("dash-acme") })).status).toBe(200);
    expect((await fetch(`${f.baseUrl}/api/limits`, { headers: bearer("dash-acme") })).status).toBe(403);
  });

  it("names the token as the actor of the events its actions cause", async () => {
    const response = await fetch(`${f.baseUrl}/api/workflows/${mine}/actions/pause`, {
      method: "POST",
      headers: bearer("dash-write"),
    });
    expect(response.status).toBe(200);
    const events = await f.stateManager.listEvents(mine, 0);
    expect(events.at(-1)?.data?.actor).toBe("operator");
  });
});
