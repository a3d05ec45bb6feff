import { stripVTControlCharacters } from "node:util";
import { describe, expect, it } from "vitest";
import { LogCapture } from "./log-capture.test-helper.js";
import { createLogger } from "./logger.js";

describe("createLogger", () => {
  it("writes one JSON line per entry with the app, level name and ISO time", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "scheduler", level: "info", destination: out });
    logger.info({ workflowId: "w1" }, "claimed nodes");
    const [record] = out.records();
    expect(record).toMatchObject({ app: "scheduler", level: "info", msg: "claimed nodes", workflowId: "w1" });
    expect(new Date(String(record?.time)).toISOString()).toBe(record?.time);
    expect(record).not.toHaveProperty("pid");
    expect(record).not.toHaveProperty("hostname");
  });

  it("drops entries below the level", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "api", level: "warn", destination: out });
    logger.info("hidden");
    logger.warn("shown");
    expect(out.records().map((r) => r.msg)).toEqual(["shown"]);
  });

  it("serializes errors under err and redacts credentials", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "api", level: "info", destination: out });
    logger.error({ err: new Error("boom"), headers: { authorization: "Bearer s3cret" } }, "failed");
    const [record] = out.records();
    expect(record?.err).toMatchObject({ type: "Error", message: "boom" });
    expect(JSON.stringify(record)).not.toContain("s3cret");
  });

  it("writes human-readable lines when pretty", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "worker", level: "info", pretty: true, destination: out });
    logger.info("hello there");
    expect(out.text).toContain("hello there");
    expect(() => JSON.parse(out.text.trim())).toThrow();
  });

  it("writes one readable line per entry when pretty: an event as a sentence, other fields inline", () => {
    const out = new LogCapture();
    const logger = createLogger({ app: "worker", level: "info", pretty: true, destination: out });
    const wf = "9c33e512-4976-4534-bc55-52fee1880a49";
    const event = { event: "node.status_changed", workflow_id: wf, sequence: 7, workflow_status: "RUNNING" };
    logger.info(
      { ...event, node_id: "a", capability: "echo", attempt: 1, node_status: "RUNNING", data: { from: "QUEUED" } },
      "node.status_changed",
    );
    logger.warn(
      {
        ...event,
        node_id: "c",
        capability: "fail",
        attempt: 1,
        node_status: "FAIL",
        data: { from: "RUNNING", error: { kind: "TASK_ERROR", message: "no such city" } },
      },
      "node.status_changed",
    );
    logger.info(
      {
        event: "node.retry_scheduled",
        workflow_id: wf,
        node_id: "b",
        attempt: 1,
        node_status: "QUEUED",
        data: { attempt: 1, delayMs: 200, error: { kind: "INFRA_ERROR", message: "flaky" } },
      },
      "node.retry_scheduled",
    );
    logger.info({ method: "workflow.v1.WorkflowService/GetWorkflow", code: "OK", workflow_id: wf }, "grpc call");
    const lines = stripVTControlCharacters(out.text).trimEnd().split("\n");
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/INFO.*\[worker\] node a QUEUED -> RUNNING \(attempt 1\) \[echo\] wf=9c33e512-/);
    expect(lines[1]).toMatch(
      /WARN.*\[worker\] node c RUNNING -> FAIL \(attempt 1\): TASK_ERROR: no such city \[fail\]/,
    );
    expect(lines[2]).toContain("node b attempt 1 failed, retry in 200ms: INFRA_ERROR: flaky");
    expect(lines[3]).toMatch(
      /\[worker\] grpc call wf=9c33e512-\S+ \{.*"method":"workflow\.v1\.WorkflowService\/GetWorkflow"/,
    );
    for (const line of lines) expect(line).not.toMatch(/sequence|hostname|"data"/);
  });

  it("rejects an unknown level", () => {
    expect(() => createLogger({ app: "api", level: "verbose", destination: new LogCapture() })).toThrow();
  });
});
