import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DashboardFixture, node, readSse, startDashboard } from "./fixture.js";

let f: DashboardFixture;
let workflowId: string;

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
const GOOD = basic("ops", "s3cret:with-colon");

beforeAll(async () => {
  f = await startDashboard("dashauth", { user: "ops", password: "s3cret:with-colon" });
  const { workflow } = await f.stateManager.createWorkflow({ name: "guarded", nodes: [node("a")] });
  workflowId = workflow.id;
});

afterAll(async () => {
  await f?.close();
});

describe("basic auth (DASHBOARD_USER / DASHBOARD_PASSWORD)", () => {
  const paths = () => [
    "/",
    `/workflows/${workflowId}`,
    "/assets/js/list-page.js",
    "/api/workflows",
    `/api/workflows/${workflowId}`,
    `/api/workflows/${workflowId}/events`,
    `/api/workflows/${workflowId}/stream`,
    "/queues",
    "/queues/api/queues",
  ];

  it("answers 401 with a challenge on every page, API endpoint and Bull Board without credentials", async () => {
    for (const path of paths()) {
      const response = await fetch(`${f.baseUrl}${path}`);
      expect(response.status, path).toBe(401);
      expect(response.headers.get("www-authenticate"), path).toMatch(/^Basic realm="trellis"/);
    }
    const action = await fetch(`${f.baseUrl}/api/workflows/${workflowId}/actions/cancel`, { method: "POST" });
    expect(action.status).toBe(401);
  });

  it("answers 401 for a wrong user or password", async () => {
    for (const authorization of [basic("ops", "wrong"), basic("root", "s3cret:with-colon"), "Bearer s3cret"]) {
      const response = await fetch(`${f.baseUrl}/api/workflows`, { headers: { authorization } });
      expect(response.status).toBe(401);
    }
  });

  it("serves everything with the right credentials", async () => {
    for (const path of paths().filter((p) => !p.endsWith("/stream"))) {
      const response = await fetch(`${f.baseUrl}${path}`, { headers: { authorization: GOOD } });
      expect(response.status, path).toBe(200);
      await response.arrayBuffer();
    }
    const stream = await fetch(`${f.baseUrl}/api/workflows/${workflowId}/stream`, {
      headers: { authorization: GOOD },
    });
    expect(stream.status).toBe(200);
    const { frames } = await readSse(stream, (got) => got.some((x) => x.event === "message"));
    expect(JSON.parse(frames.find((x) => x.event === "message")!.data).type).toBe("workflow.created");
  });

  it("leaves the probes and metrics of the side server open", async () => {
    expect((await fetch(`${f.baseUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${f.baseUrl}/readyz`)).status).toBe(200);
  });
});
