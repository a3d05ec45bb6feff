import { create } from "@bufbuild/protobuf";
import type { StateManager } from "@trellis/db";
import { NodeSchema } from "@trellis/proto";

/** Creates the two-node chain a -> b (capability echo) and returns its workflow id. */
export async function createChainWorkflow(stateManager: StateManager, name: string): Promise<string> {
  const { workflow } = await stateManager.createWorkflow({
    name,
    nodes: [
      create(NodeSchema, { id: "a", capability: "echo" }),
      create(NodeSchema, { id: "b", capability: "echo", parentIds: ["a"] }),
    ],
  });
  return workflow.id;
}

/**
 * Plays scheduler and worker by hand for one wave: claims the workflow's ready nodes, starts them and records
 * a PASS for each. Returns the ids that ran.
 */
export async function passReadyNodes(stateManager: StateManager, workflowId: string): Promise<string[]> {
  const ran: string[] = [];
  for (const queued of (await stateManager.claimReadyNodes(1_000)).filter((q) => q.workflowId === workflowId)) {
    const started = await stateManager.startNode(workflowId, queued.nodeId);
    if (!started) continue;
    await stateManager.recordResult(workflowId, queued.nodeId, started.lease, {
      kind: "success",
      output: undefined,
      edits: [],
    });
    ran.push(queued.nodeId);
  }
  return ran;
}
