import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { EXCERPT_WIDTH } from "./json-text.js";
import { WorkflowFileError, parseWorkflowFile, readWorkflowFile } from "./workflow-file.js";

const dir = mkdtempSync(join(tmpdir(), "trellis-wf-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("parseWorkflowFile", () => {
  it("reads JSON in protobuf JSON form", () => {
    const request = parseWorkflowFile(
      "wf.json",
      JSON.stringify({
        name: "diamond",
        labels: { team: "research" },
        nodes: [
          { id: "a", capability: "echo", input: { step: 1 } },
          { id: "b", capability: "sleep", parentIds: ["a"], timeout: "2.5s", retryPolicy: { maxAttempts: 5 } },
        ],
      }),
    );
    expect(request.name).toBe("diamond");
    expect(request.labels).toEqual({ team: "research" });
    expect(request.nodes.map((n) => n.id)).toEqual(["a", "b"]);
    expect(request.nodes[0]?.input).toEqual({ step: 1 });
    expect(request.nodes[1]?.parentIds).toEqual(["a"]);
    expect(request.nodes[1]?.timeout?.seconds).toBe(2n);
    expect(request.nodes[1]?.timeout?.nanos).toBe(500_000_000);
    expect(request.nodes[1]?.retryPolicy?.maxAttempts).toBe(5);
  });

  it("reads YAML, with the proto field names too", () => {
    const request = parseWorkflowFile(
      "flows/plan.yml",
      [
        "name: plan",
        "request_id: plan-1",
        "input: {topic: agents}",
        "nodes:",
        "  - id: outline",
        "    capability: llm.mock",
        "  - id: report",
        "    capability: llm.mock",
        "    parent_ids: [outline]",
        "    retry_policy: {max_attempts: 2, initial_backoff: 0.5s}",
      ].join("\n"),
    );
    expect(request.requestId).toBe("plan-1");
    expect(request.input).toEqual({ topic: "agents" });
    expect(request.nodes[1]?.parentIds).toEqual(["outline"]);
    expect(request.nodes[1]?.retryPolicy?.initialBackoff?.nanos).toBe(500_000_000);
  });

  it("names a workflow without a name after its file", () => {
    expect(parseWorkflowFile("examples/nightly-report.yaml", "nodes: []").name).toBe("nightly-report");
  });

  it("says which file is wrong and why", () => {
    const cases: [string, string, string][] = [
      ["a.json", "{nope", "a.json: not valid JSON:"],
      ["a.yaml", "nodes: [a, b", "a.yaml: not valid YAML:"],
      ["a.yaml", "- just\n- a list", 'a.yaml: expected an object with "name" and "nodes", got a list'],
      ["a.json", '"text"', 'a.json: expected an object with "name" and "nodes", got a string'],
      ["a.json", '{"nodes": [{"id": "x", "colour": "red"}]}', "a.json: not a CreateWorkflowRequest:"],
      ["a.json", '{"nodes": [{"id": "x", "timeout": "soon"}]}', "a.json: not a CreateWorkflowRequest:"],
    ];
    for (const [path, text, message] of cases) {
      expect(() => parseWorkflowFile(path, text), text).toThrow(WorkflowFileError);
      expect(() => parseWorkflowFile(path, text), text).toThrow(message);
    }
  });
});

describe("parseWorkflowFile syntax errors", () => {
  it("shows YAML's whole message: what is wrong, the line and column, and the lines around it with a caret", () => {
    const text = ["name: broken", "nodes:", "  - id: a", "    capability: [echo", "  - id: b", "    capability: echo"];
    let message = "";
    try {
      parseWorkflowFile("flows/broken.yaml", text.join("\n"));
    } catch (error) {
      expect(error).toBeInstanceOf(WorkflowFileError);
      message = (error as Error).message;
    }
    expect(message).toMatch(/^flows\/broken\.yaml: not valid YAML: .+ at line 5, column 3:$/m);
    expect(message).toContain("    capability: [echo\n  - id: b\n  ^");
  });

  it("says how many more errors a YAML file has after the first", () => {
    expect(() => parseWorkflowFile("a.yaml", "a: [1\nb: {2\n")).toThrow(/\(\d+ more errors? after this one\)$/);
  });

  it("gives a JSON error's line and column and shows the line with a caret", () => {
    const text = '{\n  "name": "x",\n  "nodes": [\n    {"id": "a", capability: "echo"}\n  ]\n}';
    expect(() => parseWorkflowFile("wf.json", text)).toThrow(
      /^wf\.json: not valid JSON: .* at line 4, column 17:\n\n {4}\{"id": "a", capability: "echo"\}\n {16}\^$/,
    );
  });
});

describe("a JSON error on a very long line", () => {
  it("shows the part of the line around the error, not the whole line, with the caret under it", () => {
    const nodes = Array.from({ length: 300 }, (_, i) => `{"id": "n${i}", "capability": "echo"}`);
    nodes[150] = '{"id": "n150", capability: "echo"}';
    const text = `{"name": "long", "nodes": [${nodes.join(", ")}]}`;
    let message = "";
    try {
      parseWorkflowFile("long.json", text);
    } catch (error) {
      message = (error as Error).message;
    }
    const [excerpt, caret] = message.split("\n").slice(-2) as [string, string];
    expect(message).toMatch(/at line 1, column \d+:/);
    expect(excerpt.length).toBeLessThanOrEqual(EXCERPT_WIDTH + 2);
    expect(excerpt.startsWith("…") && excerpt.endsWith("…")).toBe(true);
    expect(caret).toMatch(/^ *\^$/);
    expect(excerpt.slice(caret.length - 1)).toMatch(/^capability: "echo"/);
  });
});

describe("standard input (-)", () => {
  it("reads the workflow from standard input, named stdin when the document has no name", () => {
    const request = readWorkflowFile("-", () => "nodes:\n  - id: a\n    capability: echo\n");
    expect(request.name).toBe("stdin");
    expect(request.nodes.map((n) => n.id)).toEqual(["a"]);
    expect(readWorkflowFile("-", () => '{"name": "piped", "nodes": []}').name).toBe("piped");
  });

  it("names stdin in errors", () => {
    expect(() => readWorkflowFile("-", () => "nodes: [a")).toThrow(/^stdin: not valid YAML: /);
    expect(() =>
      readWorkflowFile("-", () => {
        throw Object.assign(new Error("EAGAIN: resource temporarily unavailable, read"), { code: "EAGAIN" });
      }),
    ).toThrow("stdin: cannot read: EAGAIN");
  });
});

describe("readWorkflowFile", () => {
  it("reads the file it is given", () => {
    const path = join(dir, "one.json");
    writeFileSync(path, '{"name": "one", "nodes": [{"id": "a", "capability": "echo"}]}');
    expect(readWorkflowFile(path).name).toBe("one");
  });

  it("says when there is no such file", () => {
    expect(() => readWorkflowFile(join(dir, "missing.yaml"))).toThrow(`${join(dir, "missing.yaml")}: no such file`);
  });
});
