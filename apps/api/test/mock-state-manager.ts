import { create } from "@bufbuild/protobuf";
import type { ActionEffects, LimitSpec, LimitState, StateManager } from "@trellis/db";
import { NodeSchema, WorkflowSchema, WorkflowStatus } from "@trellis/proto";
import { vi } from "vitest";

/** The id of the workflow the mock returns. */
export const WORKFLOW_ID = "0b7a3c1e-9f4d-4f7a-8c7e-2d1f5a6b7c8d";

/** A limit as the StateManager returns it: the spec, configured, holding nothing, with a full bucket. */
export function limitState(spec: LimitSpec, live: Partial<LimitState> = {}): LimitState {
  return {
    ...spec,
    configured: true,
    throttledUntil: null,
    running: 0,
    waiting: 0,
    available: spec.rate > 0 ? spec.burst : null,
    throttledTotal: 0,
    ...live,
  };
}

/** vi.fn mocks of what the api calls; any other StateManager method throws, so a stray call shows up. */
export function mockStateManager() {
  const workflow = create(WorkflowSchema, { id: WORKFLOW_ID, name: "wf", status: WorkflowStatus.PENDING });
  const effects: ActionEffects = { workflow, cancelledRunning: [], removedJobIds: [] };
  const used = {
    createWorkflow: vi.fn<StateManager["createWorkflow"]>(async () => ({ workflow, created: true })),
    getWorkflow: vi.fn<StateManager["getWorkflow"]>(async () => workflow),
    listWorkflows: vi.fn<StateManager["listWorkflows"]>(async () => ({ workflows: [workflow], nextPageToken: "next" })),
    updateWorkflow: vi.fn<StateManager["updateWorkflow"]>(async () => effects),
    getNode: vi.fn<StateManager["getNode"]>(async (_w, nodeId) => create(NodeSchema, { id: nodeId })),
    updateNode: vi.fn<StateManager["updateNode"]>(async (_w, node) => node),
    applyNodeEdits: vi.fn<StateManager["applyNodeEdits"]>(async () => workflow),
    listNodeAttempts: vi.fn<StateManager["listNodeAttempts"]>(async () => []),
    setLimit: vi.fn<StateManager["setLimit"]>(async (spec) => limitState(spec)),
    listLimits: vi.fn<StateManager["listLimits"]>(async () => []),
    deleteLimit: vi.fn<StateManager["deleteLimit"]>(async () => true),
    forkWorkflow: vi.fn<StateManager["forkWorkflow"]>(async () => ({ workflow, created: true })),
    signalNode: vi.fn<StateManager["signalNode"]>(async (input) => ({
      node: create(NodeSchema, { id: input.nodeId }),
      completed: true,
    })),
  };
  const stateManager = new Proxy(used, {
    get(target, property, receiver) {
      if (property in target || typeof property === "symbol") return Reflect.get(target, property, receiver);
      return () => {
        throw new Error(`StateManager.${property} is not used by the api`);
      };
    },
  }) as typeof used & StateManager;
  return Object.assign(stateManager, { workflow });
}
