// What an operator relies on over HTTP: the workers API, Bull Board read-only unless DASHBOARD_QUEUE_ACTIONS, and no
// asset of the UI loaded from another host.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_RETRY_POLICY } from "@trellis/core";
import { NodeQueues, createRedis } from "@trellis/queue";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PUBLIC_DIR } from "../src/ui-routes.js";
import { type DashboardFixture, node, startDashboard, startNode } from "./fixture.js";

/** Puts one job on the `llm.chat` queue, so Bull Board has a queue to act on. */
async function seedQueue({ redisUrl, queuePrefix }: { redisUrl: string; queuePrefix: string }): Promise<void> {
  const redis = createRedis(redisUrl);
  const queues = new NodeQueues(redis, queuePrefix);
  await queues.enqueue([
    {
      workflowId: "00000000-0000-4000-8000-000000000002",
      nodeId: "seed",
      capability: "llm.chat",
      jobId: "00000000-0000-4000-8000-000000000002/seed/1",
      retryPolicy: DEFAULT_RETRY_POLICY,
    },
  ]);
  await queues.close();
  redis.disconnect();
}

describe("dashboard for operators", () => {
  let f: DashboardFixture;
  let writable: DashboardFixture;

  beforeAll(async () => {
    [f, writable] = await Promise.all([
      startDashboard("dashops", { before: seedQueue, workerStaleMs: 60_000 }),
      startDashboard("dashopsrw", { before: seedQueue, queueActions: true }),
    ]);
  });

  afterAll(async () => {
    await Promise.all([f?.close(), writable?.close()]);
  });

  it("lists workers with their capabilities, heartbeat age, liveness and running nodes per capability", async () => {
    const sm = f.stateManager;
    const session = await sm.registerWorker("worker-a", ["echo", "llm.chat"], "host-a");
    await sm.registerWorker("worker-b", ["web.search"], "host-b");
    const { workflow } = await sm.createWorkflow({ name: "busy", nodes: [node("x"), node("y")] });
    await startNode(sm, workflow.id, "x");
    await sm.claimReadyNodes(500);
    expect(await sm.startNode(workflow.id, "y", session)).not.toBeNull();

    const response = await fetch(`${f.baseUrl}/api/workers`);
    expect(response.status).toBe(200);
    const body = (await response.json()) as {
      staleAfterMs: number;
      workers: {
        id: string;
        hostname: string;
        capabilities: string[];
        heartbeatAgeMs: number;
        heartbeatAt: string;
        live: boolean;
        running: Record<string, number>;
      }[];
    };
    expect(body.staleAfterMs).toBe(60_000);
    expect(body.workers.map((w) => w.id)).toEqual(["worker-a", "worker-b"]);
    const [a, b] = body.workers;
    expect(a).toMatchObject({
      hostname: "host-a",
      capabilities: ["echo", "llm.chat"],
      live: true,
      running: { echo: 1 },
    });
    expect(b).toMatchObject({ live: true, running: {} });
    expect(a!.heartbeatAgeMs).toBeGreaterThanOrEqual(0);
    expect(a!.heartbeatAgeMs).toBeLessThan(60_000);
    expect(Number.isNaN(Date.parse(a!.heartbeatAt))).toBe(false);
  });

  it("keeps Bull Board read-only by default: a write action is refused with 405, reads work", async () => {
    const list = await fetch(`${f.baseUrl}/queues/api/queues`);
    expect(list.status).toBe(200);
    const { queues } = (await list.json()) as { queues: { name: string; readOnlyMode: boolean }[] };
    expect(queues.find((q) => q.name === "llm.chat")?.readOnlyMode).toBe(true);
    const pause = await fetch(`${f.baseUrl}/queues/api/queues/llm.chat/pause`, { method: "PUT" });
    expect(pause.status).toBe(405);
  });

  it("allows Bull Board's write actions with DASHBOARD_QUEUE_ACTIONS=true", async () => {
    const pause = await fetch(`${writable.baseUrl}/queues/api/queues/llm.chat/pause`, { method: "PUT" });
    expect(pause.status).toBe(200);
    const resume = await fetch(`${writable.baseUrl}/queues/api/queues/llm.chat/resume`, { method: "PUT" });
    expect(resume.status).toBe(200);
  });

  it("serves Bull Board's page without the web fonts it would load from another host", async () => {
    const html = await (await fetch(`${f.baseUrl}/queues`)).text();
    expect(html).toContain("static/css/");
    expect(html).not.toMatch(/(?:href|src)="(?:https?:)?\/\//);
  });

  it("references only same-origin assets from every page and the stylesheet (no font or script from outside)", () => {
    const files = [
      ...readdirSync(PUBLIC_DIR).filter((n) => n.endsWith(".html")),
      ...readdirSync(join(PUBLIC_DIR, "css")).map((n) => `css/${n}`),
      ...readdirSync(join(PUBLIC_DIR, "js")).map((n) => `js/${n}`),
    ];
    expect(files).toContain("workers.html");
    const external: string[] = [];
    for (const file of files) {
      const text = readFileSync(join(PUBLIC_DIR, file), "utf8");
      const refs = [
        ...text.matchAll(/<(?:link|script|img)\b[^>]*\b(?:href|src)="([^"]*)"/g),
        ...text.matchAll(/url\(\s*['"]?([^'")]*)/g),
        ...text.matchAll(/@import\s+['"]([^'"]*)/g),
        ...text.matchAll(/\bimport\s[^;]*?from\s+["']([^"']*)["']/g),
      ].map((m) => m[1]!);
      for (const ref of refs) {
        if (/^(?:[a-z][a-z0-9+.-]*:)?\/\//i.test(ref) && !ref.startsWith("http://www.w3.org/"))
          external.push(`${file}: ${ref}`);
      }
    }
    expect(external).toEqual([]);
  });
});
