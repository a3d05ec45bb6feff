// The dashboard on real graphs, in headless Chromium (Debian's `chromium` driven by playwright-core): a 300-node
// workflow read by panning, zooming, a collapsed fan-out, search and the legend's filter; a node's attempt history;
// the banner of a node no live worker can run; the Workers page; a 420 px wide screen and the keyboard.
import { create, fromJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ErrorKind, type Node, NodeSchema } from "@trellis/proto";
import { waitFor } from "@trellis/testing";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { artifact, launchChromium, skipWithoutChromium } from "./chromium.js";
import { type DashboardFixture, node, passNode, startDashboard } from "./fixture.js";

const UI_TIMEOUT_MS = 20_000;
/** Siblings in the big workflow's fan-out. */
const FANOUT = 280;

const skip = skipWithoutChromium("dashboard graph browser tests");

/** `plan` -> FANOUT × web.search -> `merge` -> a chain of steps: 300 nodes. */
function bigWorkflow(): Node[] {
  const nodes = [node("plan", [], "plan")];
  const searches: string[] = [];
  for (let i = 0; i < FANOUT; i++) {
    const id = `search-${String(i).padStart(3, "0")}`;
    searches.push(id);
    nodes.push(node(id, ["plan"], "web.search"));
  }
  nodes.push(node("merge", searches, "llm.chat"));
  let previous = "merge";
  while (nodes.length < 300) {
    const id = `step-${String(nodes.length).padStart(3, "0")}`;
    nodes.push(node(id, [previous], "llm.chat"));
    previous = id;
  }
  return nodes;
}

describe.skipIf(skip)("dashboard on real graphs in headless Chromium", () => {
  let f: DashboardFixture;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let problems: string[];
  let foreign: string[];

  beforeAll(async () => {
    f = await startDashboard("dashgraph", { workerStaleMs: 60_000 });
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await f?.close();
  });

  async function newPage(viewport = { width: 1440, height: 1000 }): Promise<void> {
    context = await browser.newContext({ viewport });
    page = await context.newPage();
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    page.on("request", (request) => {
      if (!request.url().startsWith(f.baseUrl) && !request.url().startsWith("data:")) foreign.push(request.url());
    });
    page.on("response", (response) => {
      if (response.url().startsWith(f.baseUrl) && response.status() >= 400) {
        problems.push(`HTTP ${response.status()}: ${response.url()}`);
      }
    });
  }

  beforeEach(async () => {
    problems = [];
    foreign = [];
  });

  afterEach(async () => {
    await context?.close();
    expect(problems).toEqual([]);
    // Nothing (font, script, picture) is loaded from another host.
    expect(foreign).toEqual([]);
  });

  async function openWorkflow(id: string): Promise<void> {
    await page.goto(`${f.baseUrl}/workflows/${id}`);
    await page.locator("body[data-ready=true]").waitFor();
  }

  const transform = () => page.locator("svg.dag .dag-viewport").getAttribute("transform");
  const scale = async () => Number(await page.locator("svg.dag").getAttribute("data-scale"));
  /** The centre of an element relative to the graph's box, and the box's size. */
  async function placeOf(selector: string) {
    // A string, run in the page: this file is type-checked without the DOM's types.
    return page.evaluate<{ x: number; y: number; inside: boolean; w: number; h: number }>(`(() => {
      const host = document.getElementById("dag").getBoundingClientRect();
      const r = document.querySelector(${JSON.stringify(selector)}).getBoundingClientRect();
      return {
        x: r.x + r.width / 2 - host.x,
        y: r.y + r.height / 2 - host.y,
        inside: r.x >= host.x && r.y >= host.y && r.right <= host.right && r.bottom <= host.bottom,
        w: host.width,
        h: host.height,
      };
    })()`);
  }
  /** The node id of the focused element. */
  const focusedNode = () =>
    page.evaluate<string | null>(`document.activeElement?.getAttribute("data-node-id") ?? null`);

  it("reads a 300-node workflow: a collapsed fan-out with counts, zoom, pan, pinch, search, the legend filter and live insertions", async () => {
    await newPage();
    const sm = f.stateManager;
    const { workflow } = await sm.createWorkflow({ name: "three-hundred", nodes: bigWorkflow() });
    await passNode(sm, workflow.id, "plan", fromJson(ValueSchema, { queries: FANOUT }));
    // The scheduler's claim queues the whole fan-out; a few run, a few pass.
    await sm.claimReadyNodes(500);
    for (let i = 0; i < 5; i++) await sm.startNode(workflow.id, `search-00${i}`);
    for (let i = 5; i < 9; i++) {
      const started = await sm.startNode(workflow.id, `search-00${i}`);
      await sm.recordResult(workflow.id, `search-00${i}`, started!.lease, {
        kind: "success",
        output: undefined,
        edits: [],
      });
    }
    await openWorkflow(workflow.id);

    // The fan-out is one group node with its counts by status.
    const group = page.locator("svg.dag g.node-group");
    await group.waitFor();
    expect(await group.getAttribute("data-count")).toBe(String(FANOUT));
    expect(await group.locator(".node-name").textContent()).toBe(`${FANOUT} × web.search`);
    expect(await group.getAttribute("data-counts")).toBe("5 running · 271 queued · 4 pass");
    expect(await page.locator("svg.dag g.node").count()).toBe(300 - FANOUT);
    // Fit keeps labels legible; the minimap shows the rest of the graph.
    expect(await scale()).toBeGreaterThanOrEqual(0.6);
    await page.locator(".dag-minimap:not([hidden])").waitFor();
    await page.screenshot({ path: artifact("dashboard-300-nodes.png"), animations: "disabled" });

    // Wheel zooms in around the pointer.
    const box = (await page.locator("#dag").boundingBox())!;
    const before = await transform();
    const scaleBefore = await scale();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.wheel(0, -300);
    await waitFor(async () => (await scale()) > scaleBefore, { timeoutMs: 5_000, description: "wheel to zoom in" });
    expect(await transform()).not.toBe(before);
    expect(await page.locator("#zoom-level").textContent()).toBe(`${Math.round((await scale()) * 100)}%`);

    // Dragging the background pans.
    const panned = await transform();
    await page.mouse.move(box.x + 20, box.y + 20);
    await page.mouse.down();
    await page.mouse.move(box.x + 140, box.y + 90, { steps: 6 });
    await page.mouse.up();
    const after = /translate\(([-\d.]+) ([-\d.]+)\)/.exec((await transform())!)!;
    const was = /translate\(([-\d.]+) ([-\d.]+)\)/.exec(panned!)!;
    expect(Number(after[1]) - Number(was[1])).toBeCloseTo(120, 0);
    expect(Number(after[2]) - Number(was[2])).toBeCloseTo(70, 0);

    // Two fingers moving apart zoom in (pointer events, as a touch screen sends them).
    const pinchFrom = await scale();
    const [cx, cy] = [box.x + box.width / 2, box.y + box.height / 2];
    await page.evaluate(`(() => {
      const svg = document.querySelector("svg.dag");
      const send = (type, pointerId, clientX) =>
        svg.dispatchEvent(new PointerEvent(type, {
          pointerId, clientX, clientY: ${cy}, pointerType: "touch", bubbles: true, isPrimary: pointerId === 1,
        }));
      send("pointerdown", 1, ${cx} - 40);
      send("pointerdown", 2, ${cx} + 40);
      send("pointermove", 1, ${cx} - 80);
      send("pointermove", 2, ${cx} + 80);
      send("pointerup", 1, ${cx} - 80);
      send("pointerup", 2, ${cx} + 80);
    })()`);
    expect(await scale()).toBeCloseTo(Math.min(2, pinchFrom * 2), 2);

    // Search by id: the fan-out opens, the node is centred, highlighted, focused and shown in the panel.
    await page.fill("#dag-search", "search-137");
    await page.press("#dag-search", "Enter");
    const found = page.locator('svg.dag g.node[data-node-id="search-137"]');
    await found.waitFor();
    await page.locator('svg.dag g.node.is-found[data-node-id="search-137"]').waitFor();
    expect(await page.locator("svg.dag g.node-group").count()).toBe(0);
    expect(await page.locator("svg.dag g.node").count()).toBe(300);
    await page.locator('#node-panel[data-node-id="search-137"]').waitFor();
    await waitFor(
      async () => {
        const place = await placeOf('svg.dag g.node[data-node-id="search-137"] .node-box');
        return Math.abs(place.x - place.w / 2) < 4 && Math.abs(place.y - place.h / 2) < 4;
      },
      { timeoutMs: 5_000, description: "search-137 to be centred" },
    );
    expect(await focusedNode()).toBe("search-137");
    expect(await page.locator("#dag-collapse").isVisible()).toBe(true);

    // The legend filters: only running nodes show; a second click shows all again.
    await page.click('#legend button[data-status="RUNNING"]');
    expect(await page.locator('#legend button[data-status="RUNNING"]').getAttribute("aria-pressed")).toBe("true");
    const shown = await page.evaluate<string[]>(
      `[...document.querySelectorAll("svg.dag g.node")]
        .filter((e) => getComputedStyle(e).display !== "none").map((e) => e.getAttribute("data-status"))`,
    );
    expect(shown).toEqual(["RUNNING", "RUNNING", "RUNNING", "RUNNING", "RUNNING"]);
    await page.click('#legend button[data-status="RUNNING"]');
    expect(await page.locator("svg.dag g.node.is-filtered").count()).toBe(0);

    // Collapsing again gives the group back (Enter on it would expand it).
    await page.click("#dag-collapse");
    await group.waitFor();
    expect(await page.locator("svg.dag g.node").count()).toBe(300 - FANOUT);

    // A node inserted live far from the view is brought into view.
    await page.fill("#dag-search", "plan");
    await page.press("#dag-search", "Enter");
    await page.locator('svg.dag g.node.is-found[data-node-id="plan"]').waitFor();
    await sm.createNode(
      workflow.id,
      create(NodeSchema, { id: "late-review", capability: "llm.chat", parentIds: ["step-299"] }),
    );
    const late = page.locator('svg.dag g.node[data-node-id="late-review"][data-added="true"]');
    await late.waitFor();
    await waitFor(async () => (await placeOf('svg.dag g.node[data-node-id="late-review"] .node-box')).inside, {
      timeoutMs: 5_000,
      description: "the inserted node to be in view",
    });
  }, 120_000);

  it("shows every attempt of a node that failed twice then passed: status, error, worker, duration and usage", async () => {
    await newPage();
    const sm = f.stateManager;
    const session = await sm.registerWorker("worker-flaky", ["flaky.tool"], "host-1");
    const { workflow } = await sm.createWorkflow({
      name: "flaky-tool",
      input: { topic: "batteries" },
      nodes: [
        node("fetch", [], "echo"),
        create(NodeSchema, {
          id: "tool",
          capability: "flaky.tool",
          parentIds: ["fetch"],
          input: { query: "q" },
          retryPolicy: { maxAttempts: 3, initialBackoff: { nanos: 1_000_000 } },
        }),
      ],
    });
    await passNode(sm, workflow.id, "fetch", fromJson(ValueSchema, { pages: 12 }));
    await sm.claimReadyNodes(500);
    for (const message of ["tool timed out", "connection reset"]) {
      const started = await sm.startNode(workflow.id, "tool", session);
      const outcome = await sm.recordResult(workflow.id, "tool", started!.lease, {
        kind: "error",
        errorKind: ErrorKind.INFRA_ERROR,
        message,
        usage: { tokens: 10 },
      });
      expect(outcome.outcome).toBe("retry");
    }
    const third = await sm.startNode(workflow.id, "tool", session);
    // As a worker records it: under its session, which names the worker of the attempt.
    await sm.recordResults(
      [
        {
          workflowId: workflow.id,
          nodeId: "tool",
          lease: third!.lease,
          result: {
            kind: "success",
            output: fromJson(ValueSchema, { answer: "found" }),
            edits: [],
            usage: { tokens: 250 },
          },
        },
      ],
      { workerSession: session },
    );

    await openWorkflow(workflow.id);
    await page.locator('svg.dag g.node[data-node-id="tool"][data-status="PASS"]').click();
    const rows = page.locator('#node-panel[data-node-id="tool"] table.attempts tbody tr[data-outcome]');
    await waitFor(async () => (await rows.count()) === 3, { timeoutMs: UI_TIMEOUT_MS, description: "three attempts" });
    expect(await rows.evaluateAll((els) => els.map((e) => e.getAttribute("data-outcome")))).toEqual([
      "RETRY",
      "RETRY",
      "PASS",
    ]);
    const errors = page.locator("#node-panel tr.attempt-error");
    expect(await errors.allTextContents()).toEqual(["INFRA_ERROR: tool timed out", "INFRA_ERROR: connection reset"]);
    for (const worker of await page.locator("#node-panel .attempt-worker").allTextContents())
      expect(worker).toBe("worker-flaky");
    expect(await rows.nth(2).locator(".attempt-usage").textContent()).toBe("tokens 250");
    expect(await rows.nth(0).locator(".attempt-usage").textContent()).toBe("tokens 10");
    // Each took a measurable time.
    for (const took of await rows.evaluateAll((els) => els.map((e) => e.children[3]!.textContent)))
      expect(took).toMatch(/ms|s$/);
    // Its input, its parent's output and the workflow's input.
    const panel = page.locator("#node-panel");
    expect(await panel.locator("pre.json").first().textContent()).toContain('"query": "q"');
    expect(await panel.locator('.parent-output[data-parent-id="fetch"] pre.json').textContent()).toContain(
      '"pages": 12',
    );
    expect(await panel.textContent()).toContain('"topic": "batteries"');
    await page.screenshot({ path: artifact("dashboard-attempts.png"), animations: "disabled" });

    // The timeline filtered to this node shows only its events.
    await page.click("#show-node-events");
    await waitFor(
      async () => {
        const ids = await page.$$eval("#timeline .event", (els) => els.map((e) => e.getAttribute("data-node-id")));
        return ids.length > 0 && ids.every((id) => id === "tool");
      },
      { timeoutMs: 5_000, description: "only tool's events" },
    );
    expect(await page.locator("#event-count").textContent()).toMatch(/^\d+ of \d+ events$/);
    await page.fill("#timeline-filter", "");
    await page.dispatchEvent("#timeline-filter", "input");
    await waitFor(async () => (await page.locator('#timeline .event[data-node-id="fetch"]').count()) > 0, {
      timeoutMs: 5_000,
      description: "every event again",
    });
  }, 60_000);

  it("shows a failed node's error where its output would be", async () => {
    await newPage();
    const sm = f.stateManager;
    const { workflow } = await sm.createWorkflow({ name: "broken", nodes: [node("bad")] });
    await sm.claimReadyNodes(500);
    const started = await sm.startNode(workflow.id, "bad");
    await sm.recordResult(workflow.id, "bad", started!.lease, {
      kind: "error",
      errorKind: ErrorKind.TASK_ERROR,
      message: "the model refused",
    });
    await openWorkflow(workflow.id);
    await page.locator('svg.dag g.node[data-node-id="bad"][data-status="FAIL"]').click();
    const output = page.locator('#node-panel[data-node-id="bad"] .output-section .output-error');
    await output.waitFor();
    expect(await output.textContent()).toContain("the model refused");
  });

  it("warns on a workflow whose node waits for a capability no live worker serves, and lists the workers", async () => {
    await newPage();
    const sm = f.stateManager;
    const session = await sm.registerWorker("worker-echo", ["echo"], "host-2");
    const { workflow } = await sm.createWorkflow({
      name: "needs-a-gpu",
      nodes: [node("prep", [], "echo"), node("render", [], "gpu.render"), node("after", ["render"], "gpu.render")],
    });
    await sm.claimReadyNodes(500);
    await sm.startNode(workflow.id, "prep", session);
    await openWorkflow(workflow.id);
    const banner = page.locator("#unroutable:not([hidden])");
    await banner.waitFor();
    expect(await banner.getAttribute("data-capabilities")).toBe("gpu.render");
    const text = await banner.textContent();
    expect(text).toContain("1 node waits for gpu.render, which no live worker serves");
    expect(text).toContain("(render)");
    expect(text).toContain("WORKER_CAPABILITIES=gpu.render");
    await page.screenshot({ path: artifact("dashboard-unroutable.png"), animations: "disabled" });

    // A worker serving it appears: the banner goes at the next refresh.
    await sm.registerWorker("worker-gpu", ["gpu.render"], "host-3");
    await page.locator("#unroutable").waitFor({ state: "hidden", timeout: 15_000 });

    await page.click('.topnav a[href="/workers"]');
    await page.locator("body[data-ready=true]").waitFor();
    const row = page.locator('tr[data-worker-id="worker-echo"]');
    await row.waitFor();
    expect(await row.getAttribute("data-live")).toBe("true");
    expect(await row.locator('[data-field="capabilities"]').textContent()).toBe("echo");
    expect(await row.locator('[data-field="running"]').textContent()).toContain("echo 1");
    expect(await row.locator('[data-field="heartbeat"]').textContent()).toMatch(/ago$/);
    await page.locator('.capability-summary [data-capability="gpu.render"][data-workers="1"]').waitFor();
  }, 60_000);

  it("fits a 420 px wide screen without horizontal scrolling, and is usable from the keyboard", async () => {
    await newPage({ width: 420, height: 860 });
    const sm = f.stateManager;
    const { workflow } = await sm.createWorkflow({
      name: "a-workflow-with-a-rather-long-name-for-a-phone",
      labels: { team: "research", trigger: "nightly" },
      nodes: [node("fetch"), node("summarise", ["fetch"], "llm.chat"), node("publish", ["summarise"])],
    });
    await passNode(sm, workflow.id, "fetch", fromJson(ValueSchema, { ok: true }));
    const overflow = () =>
      page.evaluate<number>("document.documentElement.scrollWidth - document.documentElement.clientWidth");
    for (const path of ["/", `/workflows/${workflow.id}`, "/limits", "/schedules", "/workers"]) {
      await page.goto(`${f.baseUrl}${path}`);
      await page.locator("body[data-ready=true]").waitFor();
      expect({ path, overflow: await overflow() }).toEqual({ path, overflow: 0 });
    }
    await page.screenshot({ path: artifact("dashboard-420px.png"), fullPage: true, animations: "disabled" });

    // Tab reaches a node of the graph; Enter opens it.
    await page.goto(`${f.baseUrl}/workflows/${workflow.id}`);
    await page.locator("body[data-ready=true]").waitFor();
    await page.locator('svg.dag g.node[data-node-id="fetch"]').waitFor();
    let reached: string | null = null;
    for (let i = 0; i < 60 && reached === null; i++) {
      await page.keyboard.press("Tab");
      reached = await focusedNode();
    }
    expect(reached).toBe("fetch");
    await page.keyboard.press("Enter");
    await page.locator('#node-panel[data-node-id="fetch"]').waitFor();
    // The search box reaches any node.
    await page.fill("#dag-search", "publish");
    await page.keyboard.press("Enter");
    await page.locator('#node-panel[data-node-id="publish"]').waitFor();
    expect(await focusedNode()).toBe("publish");
    // Every button and link on the page can take the focus.
    const unreachable = await page.evaluate<string[]>(
      `[...document.querySelectorAll("button, a[href]")].filter((e) => e.tabIndex < 0).map((e) => e.outerHTML.slice(0, 80))`,
    );
    expect(unreachable).toEqual([]);
  }, 60_000);
});
