// The dashboard in real headless Chromium (Debian's `chromium` driven by playwright-core): what an operator sees.
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { DEFAULT_RETRY_POLICY } from "@trellis/core";
import {
  EditType,
  ErrorKind,
  NodeEditSchema,
  NodeSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowStatus,
} from "@trellis/proto";
import { NodeQueues, createRedis } from "@trellis/queue";
import { waitFor } from "@trellis/testing";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { artifact, launchChromium, skipWithoutChromium } from "./chromium.js";
import { type DashboardFixture, node, passNode, queueNode, startDashboard, startNode } from "./fixture.js";

// The README's picture is refreshed with UPDATE_SCREENSHOTS=1; other runs keep theirs under test-artifacts/.
const SCREENSHOT = fileURLToPath(
  new URL(
    process.env.UPDATE_SCREENSHOTS === "1"
      ? "../../../docs/img/dashboard-dag.png"
      : "../../../test-artifacts/dashboard-dag.png",
    import.meta.url,
  ),
);
const UI_TIMEOUT_MS = 15_000;

const skip = skipWithoutChromium("dashboard browser tests");

describe.skipIf(skip)("dashboard in headless Chromium", () => {
  let f: DashboardFixture;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];

  beforeAll(async () => {
    f = await startDashboard("dashui", {
      // A queue that exists before the dashboard starts, as after a scheduler run.
      before: async ({ redisUrl, queuePrefix }) => {
        const redis = createRedis(redisUrl);
        const queues = new NodeQueues(redis, queuePrefix);
        await queues.enqueue([
          {
            workflowId: "00000000-0000-4000-8000-000000000001",
            nodeId: "warm-up",
            capability: "llm.chat",
            jobId: "00000000-0000-4000-8000-000000000001/warm-up/1",
            retryPolicy: DEFAULT_RETRY_POLICY,
          },
        ]);
        await queues.close();
        redis.disconnect();
      },
    });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await f?.close();
  });

  beforeEach(async () => {
    context = await browser.newContext({ viewport: { width: 1440, height: 1100 } });
    page = await context.newPage();
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    problems = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // Failed loads are judged by URL below: Bull Board asks for web fonts that this machine cannot reach.
      if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
        problems.push(`console: ${message.text()}`);
      }
    });
    page.on("requestfailed", (request) => {
      if (request.url().startsWith(f.baseUrl) && !request.url().includes("/stream")) {
        problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
      }
    });
    page.on("response", (response) => {
      if (response.url().startsWith(f.baseUrl) && response.status() >= 400) {
        problems.push(`HTTP ${response.status()}: ${response.url()}`);
      }
    });
  });

  afterEach(async () => {
    await context?.close();
    // Uncaught script errors and CSP violations show up here.
    expect(problems).toEqual([]);
  });

  const nodeEl = (id: string) => page.locator(`svg.dag g.node[data-node-id="${id}"]`);
  const statusOf = (id: string, status: string) =>
    page.locator(`svg.dag g.node[data-node-id="${id}"][data-status="${status}"]`);

  async function openWorkflow(id: string): Promise<void> {
    await page.goto(`${f.baseUrl}/workflows/${id}`);
    await page.locator("body[data-ready=true]").waitFor();
    await page.locator('#live[data-state="live"]').waitFor();
  }

  it("lists a workflow created while the list is open", async () => {
    await page.goto(f.baseUrl);
    await page.locator("#workflow-rows").waitFor({ state: "attached" });
    const { workflow } = await f.stateManager.createWorkflow({
      name: "fresh-from-the-api",
      labels: { team: "search" },
      nodes: [node("a")],
    });
    const other = (await f.stateManager.createWorkflow({ name: "unlabelled", nodes: [node("a")] })).workflow;
    // The list refreshes itself every 5 s.
    const row = page.locator(`tr[data-workflow-id="${workflow.id}"]`);
    await row.waitFor();
    await page.locator(`tr[data-workflow-id="${other.id}"]`).waitFor();
    expect(await row.locator(".wf-link").textContent()).toBe("fresh-from-the-api");
    expect(await row.locator(".badge").getAttribute("data-status")).toBe("PENDING");
    expect(await row.locator(".chip").textContent()).toBe("team=search");

    await page.fill("#search", "team=search");
    await page.locator(`tr[data-workflow-id="${other.id}"]`).waitFor({ state: "detached" });
    expect(await page.locator(`tr[data-workflow-id="${workflow.id}"]`).count()).toBe(1);
    await page.click('[data-status="FAILED"]');
    await page.locator("#empty:not([hidden])").waitFor();
  }, 60_000);

  it("draws every node and edge of a workflow opened from the list", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "diamond-plus",
      nodes: [
        node("fetch"),
        node("left", ["fetch"]),
        node("right", ["fetch"]),
        node("middle", ["fetch"]),
        node("join", ["left", "right", "middle"]),
        node("publish", ["join", "fetch"]),
      ],
    });
    await page.goto(f.baseUrl);
    await page.click(`tr[data-workflow-id="${workflow.id}"] .wf-link`);
    await page.waitForURL(`**/workflows/${workflow.id}`);
    await page.locator("body[data-ready=true]").waitFor();
    await waitFor(async () => (await page.locator("svg.dag g.node").count()) === 6, { timeoutMs: UI_TIMEOUT_MS });
    const nodeIds = await page.$$eval("svg.dag g.node", (els) => els.map((e) => e.getAttribute("data-node-id")));
    expect(nodeIds.sort()).toEqual(["fetch", "join", "left", "middle", "publish", "right"]);
    const edges = await page.$$eval("svg.dag path.edge", (els) =>
      els.map((e) => `${e.getAttribute("data-from")}->${e.getAttribute("data-to")}`),
    );
    expect(edges.sort()).toEqual(
      [
        "fetch->left",
        "fetch->right",
        "fetch->middle",
        "left->join",
        "right->join",
        "middle->join",
        "join->publish",
        "fetch->publish",
      ].sort(),
    );
    // Every edge is a drawn path, and no two nodes overlap.
    const boxes = await page.$$eval("svg.dag g.node", (els) =>
      els.map((e) => {
        const r = e.getBoundingClientRect();
        return { x: r.x, y: r.y, w: r.width, h: r.height };
      }),
    );
    for (const [i, a] of boxes.entries()) {
      for (const b of boxes.slice(i + 1)) {
        const apart = a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
        expect(apart).toBe(true);
      }
    }
    expect(await page.locator("svg.dag path.edge[d^='M']").count()).toBe(8);
  });

  it("turns a node from pending to pass live, without a reload, and shows it in the node panel", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "live-colours",
      nodes: [node("a"), node("b", ["a"])],
    });
    await openWorkflow(workflow.id);
    await statusOf("a", "PENDING").waitFor();
    // A reload would drop this marker.
    await page.evaluate("globalThis.notReloaded = true");

    const started = await startNode(f.stateManager, workflow.id, "a");
    await statusOf("a", "RUNNING").waitFor();
    await f.stateManager.recordResult(workflow.id, "a", started.lease, {
      kind: "success",
      output: fromJson(ValueSchema, { answer: 42 }),
      edits: [],
    });
    await statusOf("a", "PASS").waitFor();
    expect(await page.evaluate("globalThis.notReloaded")).toBe(true);
    expect(await statusOf("b", "PENDING").count()).toBe(1);
    await page.locator('.event[data-type="node.status_changed"]').first().waitFor();

    await nodeEl("a").click();
    await page.locator('#node-panel[data-node-id="a"] .badge[data-status="PASS"]').waitFor();
    expect(await page.locator("#node-panel").textContent()).toContain("1 of 3");
    expect(await page.locator("#node-panel pre.json").nth(1).textContent()).toContain('"answer": 42');
  });

  it("shows nodes a planner inserted, in place, marked as added", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "planner-edits",
      nodes: [node("plan", [], "plan"), node("final", ["plan"])],
    });
    await openWorkflow(workflow.id);
    await waitFor(async () => (await page.locator("svg.dag g.node").count()) === 2, { timeoutMs: UI_TIMEOUT_MS });

    await passNode(f.stateManager, workflow.id, "plan", fromJson(ValueSchema, { steps: 2 }), [
      create(NodeEditSchema, { type: EditType.INSERT, node: node("research-a", ["plan"], "web.search") }),
      create(NodeEditSchema, { type: EditType.INSERT, node: node("research-b", ["plan"], "web.search") }),
      create(NodeEditSchema, {
        type: EditType.UPDATE,
        node: create(NodeSchema, { id: "final", parentIds: ["research-a", "research-b"] }),
        updateMask: { paths: ["parent_ids"] },
      }),
    ]);

    await page.locator('svg.dag g.node[data-node-id="research-b"][data-added="true"]').waitFor();
    await page.locator('svg.dag g.node[data-node-id="research-a"][data-added="true"]').waitFor();
    await waitFor(async () => (await page.locator("svg.dag path.edge").count()) === 4, { timeoutMs: UI_TIMEOUT_MS });
    const edges = await page.$$eval("svg.dag path.edge", (els) =>
      els.map((e) => `${e.getAttribute("data-from")}->${e.getAttribute("data-to")}`),
    );
    expect(edges.sort()).toEqual(["plan->research-a", "plan->research-b", "research-a->final", "research-b->final"]);
    expect(await nodeEl("plan").getAttribute("data-added")).toBe("false");
    expect(await page.locator('.event[data-type="workflow.edited"]').count()).toBe(1);
  });

  it("re-runs a failed node from its panel with a new input, opening the fork where the others kept their output", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "rerun-me",
      nodes: [node("a"), node("b", ["a"])],
    });
    await passNode(f.stateManager, workflow.id, "a", fromJson(ValueSchema, { kept: true }));
    const started = await startNode(f.stateManager, workflow.id, "b");
    await f.stateManager.recordResult(workflow.id, "b", started.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "boom",
    });
    // A finished workflow's stream has ended: the page is ready without going live.
    await page.goto(`${f.baseUrl}/workflows/${workflow.id}`);
    await page.locator("body[data-ready=true]").waitFor();
    await statusOf("b", "FAIL").waitFor();
    await nodeEl("b").click();
    await page.locator('#node-panel[data-node-id="b"] #rerun-from-here').waitFor();
    await page.click("#node-panel .rerun-details summary");
    await page.fill("#node-panel .rerun-input", '{"task": "b", "fixed": true}');
    await page.screenshot({ path: artifact("dashboard-rerun.png") });
    await page.click("#rerun-from-here");
    await page.waitForURL((url) => url.pathname.startsWith("/workflows/") && !url.pathname.endsWith(workflow.id), {
      timeout: UI_TIMEOUT_MS,
    });
    const forkId = decodeURIComponent(new URL(page.url()).pathname.split("/").pop()!);
    const fork = await f.stateManager.getWorkflow(forkId);
    expect(fork.labels.forked_from).toBe(workflow.id);
    expect(fork.nodes.map((n) => [n.id, NodeStatus[n.status]])).toEqual([
      ["a", "PASS"],
      ["b", "PENDING"],
    ]);
    expect(fork.nodes[1]!.input).toEqual({ task: "b", fixed: true });
    await statusOf("a", "PASS").waitFor();
    expect((await f.stateManager.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.FAILED);
  });

  /** Claims ready nodes until this wait node is WAITING, as the scheduler would. */
  async function untilWaiting(workflowId: string, nodeId: string): Promise<void> {
    await waitFor(
      async () => {
        await f.stateManager.claimReadyNodes(500);
        return (await f.stateManager.getNode(workflowId, nodeId)).status === NodeStatus.WAITING;
      },
      { timeoutMs: UI_TIMEOUT_MS, description: `${nodeId} to be WAITING` },
    );
  }

  it("draws a waiting node apart and approves it from its panel with an output JSON, live", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "approve-plan",
      nodes: [
        node("plan", [], "plan"),
        create(NodeSchema, { id: "approve", parentIds: ["plan"], wait: { timeout: { seconds: 3600n } } }),
        node("act", ["approve"]),
      ],
    });
    await passNode(f.stateManager, workflow.id, "plan", fromJson(ValueSchema, { steps: 3 }));
    await untilWaiting(workflow.id, "approve");
    await openWorkflow(workflow.id);
    await statusOf("approve", "WAITING").waitFor();
    expect(await nodeEl("approve").getAttribute("data-waiting")).toBe("waiting for a signal");
    expect(await nodeEl("approve").locator(".node-meta").textContent()).toBe("waiting for a signal");
    await nodeEl("approve").click();
    await page.locator('#node-panel[data-node-id="approve"] .badge[data-status="WAITING"]').waitFor();
    expect(await page.locator("#node-panel .waiting-box").textContent()).toContain(
      "After 1h 00m of waiting it passes with its timeout output.",
    );
    await page.fill("#signal-output", '{"approved": true, "note": "go"}');
    await page.screenshot({ path: artifact("dashboard-approve.png") });
    await page.click("#signal-approve");
    await statusOf("approve", "PASS").waitFor();
    await page.locator('#node-panel[data-node-id="approve"] .badge[data-status="PASS"]').waitFor();
    expect(await page.locator("#signal-approve").count()).toBe(0);
    const approved = await f.stateManager.getNode(workflow.id, "approve");
    expect(toJson(ValueSchema, approved.output!)).toEqual({ approved: true, note: "go" });
    await page.locator('.event[data-type="node.signaled"]').first().waitFor();
    await queueNode(f.stateManager, workflow.id, "act");
    await statusOf("act", "QUEUED").waitFor();
  });

  it("rejects a waiting node from its panel with a message: FAIL, its child skipped", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "reject-plan",
      nodes: [create(NodeSchema, { id: "approve", wait: {} }), node("act", ["approve"])],
    });
    await untilWaiting(workflow.id, "approve");
    await openWorkflow(workflow.id);
    await nodeEl("approve").click();
    await page.locator("#node-panel #signal-reject").waitFor();
    expect(await page.locator("#node-panel .waiting-box").textContent()).toContain("It waits for ever.");
    await page.fill("#signal-message", "plan too expensive");
    await page.click("#signal-reject");
    await statusOf("approve", "FAIL").waitFor();
    await statusOf("act", "SKIPPED").waitFor();
    await page.locator("#node-panel .error-box").waitFor();
    expect(await page.locator("#node-panel .error-box").textContent()).toContain("plan too expensive");
    expect((await f.stateManager.getWorkflow(workflow.id)).status).toBe(WorkflowStatus.FAILED);
  });

  it("cancels a workflow from the UI", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "to-be-cancelled",
      nodes: [node("slow", [], "sleep"), node("after", ["slow"])],
    });
    await startNode(f.stateManager, workflow.id, "slow");
    await openWorkflow(workflow.id);
    await statusOf("slow", "RUNNING").waitFor();

    await page.click('#wf-actions [data-action="cancel"]');
    await page.locator("dialog#confirm[open]").waitFor();
    await page.click("#confirm-yes");
    await waitFor(async () => (await f.stateManager.getWorkflowStatus(workflow.id)) === WorkflowStatus.CANCELLED, {
      timeoutMs: UI_TIMEOUT_MS,
      description: "the workflow to be CANCELLED in PostgreSQL",
    });
    await page.locator('#wf-status .badge[data-status="CANCELLED"]').waitFor();
    await statusOf("slow", "CANCELLED").waitFor();
    await statusOf("after", "CANCELLED").waitFor();
    expect(await page.locator('#wf-actions [data-action="cancel"]').isDisabled()).toBe(true);
  });

  it("says which limit holds a node back, live, and shows attempts with their usage and the workflow's budget", async () => {
    const sm = f.stateManager;
    await sm.setLimit({ key: "model:ui", maxConcurrency: 1, rate: 0, periodMs: 1000, burst: 0, unit: "" });
    const limitKeys = ["model:ui"];
    const { workflow } = await sm.createWorkflow({
      name: "held-and-spending",
      budget: { tokens: 5000 },
      nodes: [node("first", [], "llm.chat", { limitKeys, priority: 5 }), node("second", [], "llm.chat", { limitKeys })],
    });
    await openWorkflow(workflow.id);
    await statusOf("second", "PENDING").waitFor();

    await waitFor(
      async () => {
        await sm.claimReadyNodes(500);
        return (await sm.getNode(workflow.id, "second")).heldBy === "model:ui";
      },
      { timeoutMs: UI_TIMEOUT_MS, description: "second to be held by model:ui" },
    );
    await page.locator('svg.dag g.node[data-node-id="second"][data-held-by="model:ui"]').waitFor();
    expect(await nodeEl("second").locator(".node-meta").textContent()).toBe("held by model:ui");
    await statusOf("first", "QUEUED").waitFor();
    await page.locator('.event[data-type="node.held"]').first().waitFor();

    await nodeEl("second").click();
    await page.locator('#node-panel[data-node-id="second"] .held-box').waitFor();
    expect(await page.locator("#node-panel .held-box").textContent()).toContain("Held by model:ui");
    expect(await page.locator("#node-panel").textContent()).toContain("capability:llm.chat");

    const started = await sm.startNode(workflow.id, "first");
    await sm.recordResult(workflow.id, "first", started!.lease, {
      kind: "success",
      output: undefined,
      edits: [],
      usage: { tokens: 1234, cost_usd: 0.0025 },
    });
    await statusOf("first", "PASS").waitFor();
    const tokens = page.locator('#wf-usage .usage-item[data-unit="tokens"]');
    await waitFor(async () => ((await tokens.textContent()) ?? "").includes("1,234"), {
      timeoutMs: UI_TIMEOUT_MS,
      description: "the workflow's usage to show 1,234 tokens",
    });
    expect(await tokens.textContent()).toContain("of 5,000");

    await nodeEl("first").click();
    const attempt = page.locator('#node-panel[data-node-id="first"] tr[data-outcome="PASS"]');
    await attempt.waitFor();
    expect(await attempt.textContent()).toContain("tokens 1,234");
    await page.screenshot({ path: artifact("dashboard-flow-control.png"), animations: "disabled" });
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    await sm.deleteLimit("model:ui");
  });

  it("lists limits with what they hold, sets one from the form and deletes one", async () => {
    const sm = f.stateManager;
    await sm.setLimit({ key: "model:page", maxConcurrency: 1, rate: 0, periodMs: 1000, burst: 0, unit: "" });
    const limitKeys = ["model:page"];
    const { workflow } = await sm.createWorkflow({
      name: "limits-page",
      nodes: [node("p", [], "llm.chat", { limitKeys, priority: 5 }), node("q", [], "llm.chat", { limitKeys })],
    });
    await waitFor(
      async () => {
        await sm.claimReadyNodes(500);
        return (await sm.getNode(workflow.id, "q")).heldBy === "model:page";
      },
      { timeoutMs: UI_TIMEOUT_MS, description: "q to be held by model:page" },
    );

    await page.goto(`${f.baseUrl}/limits`);
    await page.locator("body[data-ready=true]").waitFor();
    const row = page.locator('tr[data-key="model:page"]');
    await row.waitFor();
    expect(await row.locator('[data-field="running"]').textContent()).toContain("1 / 1");
    expect(await row.locator('[data-field="waiting"]').textContent()).toBe("1");

    await page.screenshot({ path: artifact("dashboard-limits.png"), animations: "disabled" });
    await page.fill('#limit-form input[name="key"]', "tenant:page");
    await page.fill('#limit-form input[name="rate"]', "100000");
    await page.fill('#limit-form input[name="period"]', "1m");
    await page.fill('#limit-form input[name="unit"]', "tokens");
    await page.click("#limit-save");
    const created = page.locator('tr[data-key="tenant:page"]');
    await created.waitFor();
    expect(await created.locator('[data-field="rate"]').textContent()).toContain("100,000 tokens / 1m");
    expect(await created.locator('[data-field="available"]').textContent()).toContain("100,000 of 100,000 left");
    expect((await sm.listLimits()).find((l) => l.key === "tenant:page")).toMatchObject({
      rate: 100_000,
      periodMs: 60_000,
      unit: "tokens",
    });

    await created.locator('[data-action="delete"]').click();
    await page.locator("dialog#confirm[open]").waitFor();
    await page.click("#confirm-yes");
    await created.waitFor({ state: "detached" });
    expect((await sm.listLimits()).some((l) => l.key === "tenant:page")).toBe(false);
    await sm.updateWorkflow(workflow.id, { action: WorkflowAction.CANCEL });
    await sm.deleteLimit("model:page");
  });

  it("loads Bull Board at /queues with the capability queues", async () => {
    await page.goto(`${f.baseUrl}/queues`);
    await page.getByText("llm.chat").first().waitFor();
  });

  it("saves a screenshot of a workflow mid-run with a node added by its planner", async () => {
    const { workflow } = await f.stateManager.createWorkflow({
      name: "market-research",
      labels: { team: "research", trigger: "nightly" },
      input: { topic: "solid-state batteries" },
      nodes: [
        node("brief", [], "echo", { name: "load-brief" }),
        node("plan", ["brief"], "plan", { name: "plan-research" }),
        node("search-web", ["plan"], "web.search"),
        node("search-papers", ["plan"], "web.search"),
        node("synthesize", ["search-web", "search-papers"], "llm.chat"),
        node("fact-check", ["synthesize"], "llm.chat"),
        node("review", ["synthesize"], "llm.chat"),
        node("report", ["review", "fact-check"], "echo", { name: "write-report" }),
      ],
    });
    await openWorkflow(workflow.id);
    await waitFor(async () => (await page.locator("svg.dag g.node").count()) === 8, { timeoutMs: UI_TIMEOUT_MS });

    const sm = f.stateManager;
    await passNode(sm, workflow.id, "brief", fromJson(ValueSchema, { brief: "Market map of solid-state batteries" }));
    await passNode(
      sm,
      workflow.id,
      "plan",
      fromJson(ValueSchema, { queries: ["web", "papers", "news"], reason: "news coverage is needed for 2025" }),
      [
        create(NodeEditSchema, {
          type: EditType.INSERT,
          node: node("search-news", ["plan"], "web.search", { labels: { source: "planner" } }),
        }),
        create(NodeEditSchema, {
          type: EditType.UPDATE,
          node: create(NodeSchema, { id: "synthesize", parentIds: ["search-web", "search-papers", "search-news"] }),
          updateMask: { paths: ["parent_ids"] },
        }),
      ],
    );
    await passNode(sm, workflow.id, "search-web", fromJson(ValueSchema, { hits: 42 }));
    await startNode(sm, workflow.id, "search-papers");
    await queueNode(sm, workflow.id, "search-news");

    await statusOf("search-papers", "RUNNING").waitFor();
    await statusOf("search-news", "QUEUED").waitFor();
    await page.locator('svg.dag g.node[data-node-id="search-news"][data-added="true"]').waitFor();
    await waitFor(async () => (await page.locator("svg.dag path.edge").count()) === 11, { timeoutMs: UI_TIMEOUT_MS });
    expect(await page.locator('svg.dag g.node[data-status="PASS"]').count()).toBe(3);
    expect(await page.locator('svg.dag g.node[data-status="PENDING"]').count()).toBe(4);

    await nodeEl("plan").click();
    await page.locator('#node-panel[data-node-id="plan"] pre.json').nth(1).waitFor();
    // Let the re-layout transition settle before the picture is taken.
    await page.waitForFunction(() => {
      type Animation = { effect: { getTiming(): { iterations?: number } } | null };
      const doc = (globalThis as unknown as { document: { getAnimations(): Animation[] } }).document;
      return doc.getAnimations().every((a) => a.effect?.getTiming().iterations === Number.POSITIVE_INFINITY);
    });
    mkdirSync(dirname(SCREENSHOT), { recursive: true });
    await page.screenshot({ path: SCREENSHOT, animations: "disabled" });
    expect(existsSync(SCREENSHOT)).toBe(true);
  });
});
