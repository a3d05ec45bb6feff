import { create } from "@bufbuild/protobuf";
import { InvalidArgumentError, NotFoundError } from "@trellis/core";
import type { ListWorkflowsQuery, StateManager, WorkflowPage } from "@trellis/db";
import { type Workflow, WorkflowSchema, WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { parseSearchText, parseWorkflowSearch, parseWorkflowStatus, searchWorkflows } from "./workflow-search.js";

/** An in-memory listWorkflows with the StateManager's paging contract (opaque token = index of the next row). */
function fakeStateManager(workflows: Workflow[]): Pick<StateManager, "listWorkflows" | "getWorkflow"> & {
  queries: ListWorkflowsQuery[];
} {
  const queries: ListWorkflowsQuery[] = [];
  return {
    queries,
    async listWorkflows(query): Promise<WorkflowPage> {
      queries.push(query);
      const rows = workflows.filter(
        (w) =>
          (query.status === undefined || w.status === query.status) &&
          Object.entries(query.labelSelector ?? {}).every(([k, v]) => w.labels[k] === v),
      );
      const start = query.pageToken ? Number(query.pageToken) : 0;
      const end = start + query.pageSize;
      return { workflows: rows.slice(start, end), nextPageToken: end < rows.length ? String(end) : "" };
    },
    async getWorkflow(id) {
      const found = workflows.find((w) => w.id === id);
      if (!found) throw new NotFoundError(`workflow ${id} not found`);
      return found;
    },
  };
}

function workflows(count: number): Workflow[] {
  return Array.from({ length: count }, (_, i) =>
    create(WorkflowSchema, {
      id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
      name: i % 3 === 0 ? `nightly-report-${i}` : `ingest-${i}`,
      status: i % 2 === 0 ? WorkflowStatus.RUNNING : WorkflowStatus.SUCCEEDED,
      labels: { team: i % 4 === 0 ? "search" : "ads" },
    }),
  );
}

async function all(sm: Pick<StateManager, "listWorkflows" | "getWorkflow">, query: Record<string, string>) {
  const names: string[] = [];
  let token = "";
  let pages = 0;
  do {
    const page = await searchWorkflows(sm, parseWorkflowSearch({ ...query, page_token: token }));
    names.push(...page.workflows.map((w) => w.name));
    token = page.nextPageToken;
    pages++;
  } while (token !== "" && pages < 100);
  return { names, pages };
}

describe("parseWorkflowStatus", () => {
  it("accepts short, lower-case and enum names, and treats empty or all as any", () => {
    expect(parseWorkflowStatus("running")).toBe(WorkflowStatus.RUNNING);
    expect(parseWorkflowStatus("WORKFLOW_STATUS_FAILED")).toBe(WorkflowStatus.FAILED);
    expect(parseWorkflowStatus("")).toBeUndefined();
    expect(parseWorkflowStatus("all")).toBeUndefined();
  });

  it("refuses unknown statuses and UNSPECIFIED", () => {
    expect(() => parseWorkflowStatus("sleeping")).toThrow(InvalidArgumentError);
    expect(() => parseWorkflowStatus("unspecified")).toThrow(/status/);
  });
});

describe("parseSearchText", () => {
  it("splits key=value label terms from free text", () => {
    expect(parseSearchText("  Nightly team=search  env=prod report ")).toEqual({
      labelSelector: { team: "search", env: "prod" },
      text: "nightly report",
    });
    expect(parseSearchText("")).toEqual({ labelSelector: undefined, text: undefined });
  });
});

describe("parseWorkflowSearch", () => {
  it("refuses a page size out of range and a forged page token", () => {
    expect(() => parseWorkflowSearch({ page_size: "0" })).toThrow(/page_size/);
    expect(() => parseWorkflowSearch({ page_size: "201" })).toThrow(/page_size/);
    expect(() => parseWorkflowSearch({ page_token: "not-a-token" })).toThrow(/page_token/);
  });
});

describe("searchWorkflows", () => {
  it("pages through every workflow exactly once without a text filter", async () => {
    const sm = fakeStateManager(workflows(53));
    const { names, pages } = await all(sm, { page_size: "10" });
    expect(names).toEqual(workflows(53).map((w) => w.name));
    expect(pages).toBe(6);
  });

  it("pages through name matches exactly once, however they fall across scanned batches", async () => {
    const sm = fakeStateManager(workflows(1000));
    const { names } = await all(sm, { page_size: "7", q: "NIGHTLY" });
    expect(names).toEqual(
      workflows(1000)
        .filter((w) => w.name.startsWith("nightly"))
        .map((w) => w.name),
    );
  });

  it("combines free text, labels and status", async () => {
    const sm = fakeStateManager(workflows(100));
    const { names } = await all(sm, { q: "nightly team=search", status: "running" });
    const expected = workflows(100).filter(
      (w) => w.name.startsWith("nightly") && w.labels.team === "search" && w.status === WorkflowStatus.RUNNING,
    );
    expect(names).toEqual(expected.map((w) => w.name));
    expect(sm.queries.every((q) => q.status === WorkflowStatus.RUNNING && q.labelSelector?.team === "search")).toBe(
      true,
    );
  });

  it("stops after the scan limit with a token to read on", async () => {
    const sm = fakeStateManager(workflows(1000));
    const page = await searchWorkflows(sm, parseWorkflowSearch({ q: "no-such-name" }), { scanLimit: 400 });
    expect(page.workflows).toEqual([]);
    expect(page.nextPageToken).not.toBe("");
    const rest = await searchWorkflows(sm, parseWorkflowSearch({ q: "no-such-name", page_token: page.nextPageToken }));
    expect(rest).toEqual({ workflows: [], nextPageToken: "" });
  });

  it("finds a workflow by its full id", async () => {
    const list = workflows(5);
    const sm = fakeStateManager(list);
    const page = await searchWorkflows(sm, parseWorkflowSearch({ q: list[3]!.id }));
    expect(page.workflows.map((w) => w.id)).toEqual([list[3]!.id]);
    const none = await searchWorkflows(sm, parseWorkflowSearch({ q: "00000000-0000-4000-8000-999999999999" }));
    expect(none.workflows).toEqual([]);
  });
});
