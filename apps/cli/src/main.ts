// `trellis` command: run/get/list/watch/cancel/pause/resume/retry workflows through the API.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { fromJson, toJsonString, type JsonValue } from "@bufbuild/protobuf";
import {
  CreateWorkflowRequestSchema,
  NodeStatus,
  WorkflowAction,
  WorkflowSchema,
  WorkflowService,
  WorkflowStatus,
  createGrpcClient,
  type Workflow,
} from "@trellis/proto";
import { parse as parseYaml } from "yaml";

const USAGE = `usage: trellis <command> [options]
  run FILE.json|yaml [--watch]   create a workflow from a file (CreateWorkflowRequest in protobuf JSON)
  get ID                         print a workflow as JSON
  list [--status STATUS]         list workflows, newest first
  watch ID                       follow a workflow until it ends (exit 1 unless it SUCCEEDED)
  cancel|pause|resume|retry ID   apply an action
options: --addr HOST:PORT (TRELLIS_ADDR, default localhost:50051)  --token TOKEN (TRELLIS_TOKEN)`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    addr: { type: "string" },
    token: { type: "string" },
    watch: { type: "boolean", default: false },
    status: { type: "string" },
    help: { type: "boolean", short: "h", default: false },
  },
});

const [command, arg] = positionals;
if (values.help || !command) {
  console.log(USAGE);
  process.exit(command ? 0 : 2);
}

const addr = values.addr ?? process.env.TRELLIS_ADDR ?? "localhost:50051";
const token = values.token ?? process.env.TRELLIS_TOKEN;
const client = createGrpcClient(WorkflowService, addr);
const metadata = new grpc.Metadata();
if (token) metadata.set("authorization", `Bearer ${token}`);
const opts = () => ({ deadline: Date.now() + 30_000, metadata });

function need(value: string | undefined, what: string): string {
  if (!value) {
    console.error(`trellis ${command}: ${what} required\n${USAGE}`);
    process.exit(2);
  }
  return value;
}

const STATUS_MARK: Record<number, string> = {
  [NodeStatus.PENDING]: "·",
  [NodeStatus.QUEUED]: "…",
  [NodeStatus.RUNNING]: "▶",
  [NodeStatus.PASS]: "✔",
  [NodeStatus.FAIL]: "✘",
  [NodeStatus.SKIPPED]: "↷",
  [NodeStatus.CANCELLED]: "■",
};

function terminal(status: WorkflowStatus): boolean {
  return [WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED, WorkflowStatus.CANCELLED].includes(status);
}

/** Polls GetWorkflow, printing each node status change and a progress line, until the workflow ends. */
async function watch(workflowId: string): Promise<Workflow> {
  const seen = new Map<string, NodeStatus>();
  for (;;) {
    const { workflow } = await client.getWorkflow({ workflowId }, opts());
    const wf = workflow!;
    for (const n of wf.nodes) {
      if (seen.get(n.id) === n.status) continue;
      seen.set(n.id, n.status);
      const extra = n.error?.message ? `  (${n.error.message})` : n.attempt > 1 ? `  (attempt ${n.attempt})` : "";
      console.log(`  ${STATUS_MARK[n.status] ?? "?"} ${n.id.padEnd(28)} ${NodeStatus[n.status]}${extra}`);
    }
    const done = wf.nodes.filter((n) => n.status >= NodeStatus.PASS).length;
    const width = 30;
    const filled = wf.nodes.length ? Math.round((done / wf.nodes.length) * width) : width;
    if (process.stderr.isTTY) {
      process.stderr.write(
        `  [${"#".repeat(filled)}${".".repeat(width - filled)}] ${done}/${wf.nodes.length} ${WorkflowStatus[wf.status]}\r`,
      );
    }
    if (terminal(wf.status)) {
      if (process.stderr.isTTY) process.stderr.write("\n");
      console.log(`workflow ${wf.id} ${WorkflowStatus[wf.status]}`);
      return wf;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function main(): Promise<number> {
  switch (command) {
    case "run": {
      const file = need(arg, "FILE");
      const text = readFileSync(file, "utf8");
      const json = (file.endsWith(".yaml") || file.endsWith(".yml") ? parseYaml(text) : JSON.parse(text)) as JsonValue;
      const request = fromJson(CreateWorkflowRequestSchema, json);
      const { workflow } = await client.createWorkflow(request, opts());
      console.log(`created workflow ${workflow!.id} (${workflow!.name}, ${workflow!.nodes.length} nodes)`);
      if (!values.watch) return 0;
      return (await watch(workflow!.id)).status === WorkflowStatus.SUCCEEDED ? 0 : 1;
    }
    case "get": {
      const { workflow } = await client.getWorkflow({ workflowId: need(arg, "ID") }, opts());
      console.log(toJsonString(WorkflowSchema, workflow!, { prettySpaces: 2 }));
      return 0;
    }
    case "list": {
      const status = values.status
        ? WorkflowStatus[values.status.toUpperCase() as keyof typeof WorkflowStatus]
        : undefined;
      const { workflows } = await client.listWorkflows({ pageSize: 50, status }, opts());
      for (const w of workflows) console.log(`${w.id}  ${WorkflowStatus[w.status].padEnd(10)} ${w.name}`);
      return 0;
    }
    case "watch":
      return (await watch(need(arg, "ID"))).status === WorkflowStatus.SUCCEEDED ? 0 : 1;
    case "cancel":
    case "pause":
    case "resume":
    case "retry": {
      const action = WorkflowAction[command.toUpperCase() as "CANCEL"];
      const { workflow } = await client.updateWorkflow({ workflowId: need(arg, "ID"), action }, opts());
      console.log(`workflow ${workflow!.id} ${WorkflowStatus[workflow!.status]}`);
      return 0;
    }
    default:
      console.error(`trellis: unknown command "${command}"\n${USAGE}`);
      return 2;
  }
}

try {
  process.exitCode = await main();
} catch (error) {
  const e = error as Partial<grpc.ServiceError>;
  console.error(
    `trellis ${command}: ${typeof e.code === "number" ? `${grpc.status[e.code]}: ${e.details}` : (error as Error).message}`,
  );
  process.exitCode = 1;
} finally {
  client.close();
}
