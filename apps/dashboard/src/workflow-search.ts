import { InvalidArgumentError, NotFoundError, isUuid } from "@trellis/core";
import type { StateManager, WorkflowPage } from "@trellis/db";
import { type Workflow, WorkflowStatus } from "@trellis/proto";

/** Workflows per page when the request does not say. */
export const DEFAULT_LIST_PAGE_SIZE = 25;
/** Largest page the dashboard serves. */
export const MAX_LIST_PAGE_SIZE = 200;
/** Rows read from PostgreSQL per query while filtering by name. */
const SCAN_PAGE_SIZE = 200;

/** A parsed `GET /api/workflows` request. */
export interface WorkflowSearch {
  pageSize: number;
  status: WorkflowStatus | undefined;
  /** `key=value` terms of `q`: every one must match (a PostgreSQL label selector). */
  labelSelector: Record<string, string> | undefined;
  /** The other words of `q`: a case-insensitive substring of the name, or a prefix of the id. */
  text: string | undefined;
  /** Where the previous page stopped. */
  cursor: SearchCursor;
}

/** A position in the newest-first list: the StateManager's page token plus rows of that page already served. */
interface SearchCursor {
  token: string;
  skip: number;
}

function first(value: unknown): string | undefined {
  if (Array.isArray(value)) return first(value[0]);
  return typeof value === "string" ? value : undefined;
}

/** Reads `status` as `RUNNING`, `running` or `WORKFLOW_STATUS_RUNNING`; empty or `all` means any. */
export function parseWorkflowStatus(raw: string | undefined): WorkflowStatus | undefined {
  const text = (raw ?? "")
    .trim()
    .toUpperCase()
    .replace(/^WORKFLOW_STATUS_/, "");
  if (text === "" || text === "ALL") return undefined;
  const status = WorkflowStatus[text as keyof typeof WorkflowStatus];
  if (status === undefined || status === WorkflowStatus.UNSPECIFIED) {
    throw new InvalidArgumentError("status", `unknown status ${JSON.stringify(raw)}`);
  }
  return status;
}

/** Splits `q` into `key=value` label terms and free text. */
export function parseSearchText(q: string | undefined): Pick<WorkflowSearch, "labelSelector" | "text"> {
  const labels: Record<string, string> = {};
  const words: string[] = [];
  for (const term of (q ?? "").trim().split(/\s+/)) {
    if (term === "") continue;
    const eq = term.indexOf("=");
    if (eq > 0) labels[term.slice(0, eq)] = term.slice(eq + 1);
    else words.push(term);
  }
  return {
    labelSelector: Object.keys(labels).length > 0 ? labels : undefined,
    text: words.length > 0 ? words.join(" ").toLowerCase() : undefined,
  };
}

function encodeCursor(cursor: SearchCursor): string {
  return Buffer.from(JSON.stringify([cursor.token, cursor.skip])).toString("base64url");
}

function decodeCursor(raw: string | undefined): SearchCursor {
  if (raw === undefined || raw === "") return { token: "", skip: 0 };
  try {
    const [token, skip] = JSON.parse(Buffer.from(raw, "base64url").toString("utf8")) as [unknown, unknown];
    if (typeof token !== "string" || !Number.isInteger(skip) || (skip as number) < 0) throw new Error("bad cursor");
    return { token, skip: skip as number };
  } catch {
    throw new InvalidArgumentError("page_token", "is not a token returned by this endpoint");
  }
}

/** Parses the query string of `GET /api/workflows` (`status`, `q`, `page_token`, `page_size`). */
export function parseWorkflowSearch(query: Record<string, unknown>): WorkflowSearch {
  const rawSize = first(query.page_size);
  let pageSize = DEFAULT_LIST_PAGE_SIZE;
  if (rawSize !== undefined && rawSize !== "") {
    pageSize = Number(rawSize);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_LIST_PAGE_SIZE) {
      throw new InvalidArgumentError("page_size", `must be between 1 and ${MAX_LIST_PAGE_SIZE}, got ${rawSize}`);
    }
  }
  return {
    pageSize,
    status: parseWorkflowStatus(first(query.status)),
    ...parseSearchText(first(query.q)),
    cursor: decodeCursor(first(query.page_token)),
  };
}

function matchesText(workflow: Workflow, text: string): boolean {
  return workflow.name.toLowerCase().includes(text) || workflow.id.startsWith(text);
}

/**
 * One page of workflows, newest first. Status and labels are filtered by PostgreSQL; free text is matched here
 * (the StateManager has no name filter), reading at most `scanLimit` rows per request: a page may then hold fewer
 * matches than asked, with a token to read on.
 */
export async function searchWorkflows(
  stateManager: Pick<StateManager, "listWorkflows" | "getWorkflow">,
  search: WorkflowSearch,
  opts: { scanLimit?: number } = {},
): Promise<WorkflowPage> {
  const { text, status, labelSelector, pageSize } = search;
  if (text !== undefined && isUuid(text) && search.cursor.token === "" && search.cursor.skip === 0) {
    return searchById(stateManager, text, search);
  }
  const scanLimit = opts.scanLimit ?? 5_000;
  const batch = text === undefined ? pageSize + search.cursor.skip : SCAN_PAGE_SIZE;
  const found: Workflow[] = [];
  let { token, skip } = search.cursor;
  let scanned = 0;
  for (;;) {
    const page = await stateManager.listWorkflows({
      pageSize: Math.min(batch, 500),
      pageToken: token === "" ? undefined : token,
      status,
      labelSelector,
    });
    const rows = page.workflows;
    for (let i = skip; i < rows.length; i++) {
      scanned++;
      const row = rows[i]!;
      if (text !== undefined && !matchesText(row, text)) continue;
      found.push(row);
      if (found.length === pageSize) {
        const rest = i + 1 < rows.length ? { token, skip: i + 1 } : { token: page.nextPageToken, skip: 0 };
        return { workflows: found, nextPageToken: rest.token === "" && rest.skip === 0 ? "" : encodeCursor(rest) };
      }
    }
    if (page.nextPageToken === "") return { workflows: found, nextPageToken: "" };
    token = page.nextPageToken;
    skip = 0;
    if (scanned >= scanLimit) return { workflows: found, nextPageToken: encodeCursor({ token, skip }) };
  }
}

async function searchById(
  stateManager: Pick<StateManager, "getWorkflow">,
  id: string,
  search: WorkflowSearch,
): Promise<WorkflowPage> {
  try {
    const workflow = await stateManager.getWorkflow(id);
    const labelsMatch = Object.entries(search.labelSelector ?? {}).every(([k, v]) => workflow.labels[k] === v);
    const statusMatches = search.status === undefined || workflow.status === search.status;
    workflow.nodes = [];
    return { workflows: labelsMatch && statusMatches ? [workflow] : [], nextPageToken: "" };
  } catch (error) {
    if (error instanceof NotFoundError) return { workflows: [], nextPageToken: "" };
    throw error;
  }
}
