import type { Workflow } from "@trellis/proto";
import { NodeStatus, WorkflowStatus } from "@trellis/proto";

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The workflow list page (server-rendered; the live DAG view is not built yet). */
export function renderWorkflowList(workflows: readonly Workflow[]): string {
  const rows = workflows
    .map(
      (w) =>
        `<tr><td><a href="/workflows/${escapeHtml(w.id)}">${escapeHtml(w.name || w.id)}</a></td>` +
        `<td class="s-${WorkflowStatus[w.status]}">${WorkflowStatus[w.status]}</td>` +
        `<td>${w.createdAt ? new Date(Number(w.createdAt.seconds) * 1000).toISOString() : ""}</td></tr>`,
    )
    .join("\n");
  return page(
    "Trellis workflows",
    `<h1>Workflows</h1><p><a href="/queues">Queues (Bull Board)</a></p>
<table><thead><tr><th>name</th><th>status</th><th>created</th></tr></thead><tbody>${rows}</tbody></table>`,
  );
}

/** One workflow's nodes as a table. */
export function renderWorkflow(workflow: Workflow): string {
  const rows = workflow.nodes
    .map(
      (n) =>
        `<tr><td>${escapeHtml(n.id)}</td><td>${escapeHtml(n.capability)}</td>` +
        `<td class="s-${NodeStatus[n.status]}">${NodeStatus[n.status]}</td><td>${n.attempt}</td>` +
        `<td>${escapeHtml(n.parentIds.join(", "))}</td><td>${escapeHtml(n.error?.message ?? "")}</td></tr>`,
    )
    .join("\n");
  return page(
    `Trellis: ${workflow.name}`,
    `<p><a href="/">all workflows</a></p><h1>${escapeHtml(workflow.name || workflow.id)}</h1>
<p>${WorkflowStatus[workflow.status]} · ${escapeHtml(workflow.id)}</p>
<table><thead><tr><th>node</th><th>capability</th><th>status</th><th>attempt</th><th>parents</th><th>error</th></tr></thead>
<tbody>${rows}</tbody></table>`,
  );
}

function page(title: string, body: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta http-equiv="refresh" content="5">
<style>body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}
.s-PASS,.s-SUCCEEDED{color:#17803d}.s-FAIL,.s-FAILED{color:#b42318}.s-RUNNING{color:#175cd3}.s-SKIPPED,.s-CANCELLED{color:#667085}</style>
</head><body>${body}</body></html>`;
}
