import { NodeStatus, WorkflowAction, WorkflowStatus } from "@trellis/proto";
import { describe, expect, it } from "vitest";
import { FailedPreconditionError, InvalidArgumentError } from "./errors.js";
import {
  NODE_TRANSITIONS,
  WORKFLOW_TRANSITIONS,
  assertNodeTransition,
  assertWorkflowTransition,
  canTransitionNode,
  canTransitionWorkflow,
  isTerminalNodeStatus,
  isTerminalWorkflowStatus,
  nodeStatusName,
  workflowStatusAfterAction,
  workflowStatusName,
} from "./state-machine.js";

const nodeStatuses = Object.values(NodeStatus).filter((v): v is NodeStatus => typeof v === "number");
const workflowStatuses = Object.values(WorkflowStatus).filter((v): v is WorkflowStatus => typeof v === "number");
const actions = Object.values(WorkflowAction).filter((v): v is WorkflowAction => typeof v === "number");

/** The node state machine written out as "FROM->TO" pairs, independently of the table under test. */
const ALLOWED_NODE_MOVES = new Set([
  "PENDING->QUEUED",
  "PENDING->WAITING",
  "PENDING->SKIPPED",
  "PENDING->CANCELLED",
  "QUEUED->RUNNING",
  "QUEUED->PENDING",
  "QUEUED->SKIPPED",
  "QUEUED->CANCELLED",
  "RUNNING->PASS",
  "RUNNING->FAIL",
  "RUNNING->QUEUED",
  "RUNNING->CANCELLED",
  "FAIL->PENDING",
  "SKIPPED->PENDING",
  "WAITING->PENDING",
  "WAITING->PASS",
  "WAITING->FAIL",
  "WAITING->CANCELLED",
]);

const ALLOWED_WORKFLOW_MOVES = new Set([
  "PENDING->RUNNING",
  "PENDING->PAUSED",
  "PENDING->SUCCEEDED",
  "PENDING->FAILED",
  "PENDING->CANCELLED",
  "RUNNING->PAUSED",
  "RUNNING->SUCCEEDED",
  "RUNNING->FAILED",
  "RUNNING->CANCELLED",
  "PAUSED->PENDING",
  "PAUSED->RUNNING",
  "PAUSED->SUCCEEDED",
  "PAUSED->FAILED",
  "PAUSED->CANCELLED",
  "FAILED->RUNNING",
]);

describe("node state machine", () => {
  it("has a row for every node status", () => {
    expect(Object.keys(NODE_TRANSITIONS).map(Number).sort()).toEqual([...nodeStatuses].sort());
  });

  it("allows exactly the moves of the contract", () => {
    for (const from of nodeStatuses) {
      for (const to of nodeStatuses) {
        const move = `${nodeStatusName(from)}->${nodeStatusName(to)}`;
        expect(canTransitionNode(from, to), move).toBe(ALLOWED_NODE_MOVES.has(move));
      }
    }
  });

  it("makes PASS and CANCELLED final", () => {
    expect(NODE_TRANSITIONS[NodeStatus.PASS]).toEqual([]);
    expect(NODE_TRANSITIONS[NodeStatus.CANCELLED]).toEqual([]);
  });

  it("rejects a forbidden move with FAILED_PRECONDITION naming the node and both states", () => {
    expect(() => assertNodeTransition("a", NodeStatus.PASS, NodeStatus.RUNNING)).toThrow(FailedPreconditionError);
    expect(() => assertNodeTransition("a", NodeStatus.PASS, NodeStatus.RUNNING)).toThrow(
      'node "a" cannot go from PASS to RUNNING',
    );
    expect(() => assertNodeTransition("a", NodeStatus.RUNNING, NodeStatus.PASS)).not.toThrow();
  });

  it("rejects moves from an unknown status", () => {
    expect(canTransitionNode(99 as NodeStatus, NodeStatus.PENDING)).toBe(false);
    expect(() => assertNodeTransition("a", 99 as NodeStatus, NodeStatus.PENDING)).toThrow(
      'node "a" cannot go from UNKNOWN(99) to PENDING',
    );
  });

  it("calls PASS, FAIL, SKIPPED and CANCELLED terminal", () => {
    const terminal = nodeStatuses.filter(isTerminalNodeStatus).map(nodeStatusName);
    expect(terminal.sort()).toEqual(["CANCELLED", "FAIL", "PASS", "SKIPPED"]);
  });

  it("names statuses by their short name", () => {
    expect(nodeStatusName(NodeStatus.PASS)).toBe("PASS");
    expect(nodeStatusName(NodeStatus.UNSPECIFIED)).toBe("UNSPECIFIED");
  });
});

describe("workflow state machine", () => {
  it("has a row for every workflow status", () => {
    expect(Object.keys(WORKFLOW_TRANSITIONS).map(Number).sort()).toEqual([...workflowStatuses].sort());
  });

  it("allows exactly the moves of the contract", () => {
    for (const from of workflowStatuses) {
      for (const to of workflowStatuses) {
        const move = `${workflowStatusName(from)}->${workflowStatusName(to)}`;
        expect(canTransitionWorkflow(from, to), move).toBe(ALLOWED_WORKFLOW_MOVES.has(move));
      }
    }
  });

  it("rejects a forbidden move with FAILED_PRECONDITION naming the workflow and both states", () => {
    expect(() => assertWorkflowTransition("w1", WorkflowStatus.SUCCEEDED, WorkflowStatus.RUNNING)).toThrow(
      new FailedPreconditionError('workflow "w1" cannot go from SUCCEEDED to RUNNING'),
    );
    expect(() => assertWorkflowTransition("w1", WorkflowStatus.FAILED, WorkflowStatus.RUNNING)).not.toThrow();
  });

  it("calls SUCCEEDED, FAILED and CANCELLED terminal", () => {
    const terminal = workflowStatuses.filter(isTerminalWorkflowStatus).map(workflowStatusName);
    expect(terminal.sort()).toEqual(["CANCELLED", "FAILED", "SUCCEEDED"]);
  });
});

describe("workflowStatusAfterAction", () => {
  const expected: Record<string, string> = {
    "PAUSE PENDING": "PAUSED",
    "PAUSE RUNNING": "PAUSED",
    "RESUME PAUSED": "RUNNING",
    "CANCEL PENDING": "CANCELLED",
    "CANCEL RUNNING": "CANCELLED",
    "CANCEL PAUSED": "CANCELLED",
    "RETRY FAILED": "RUNNING",
  };

  it("moves the workflow as the contract says and refuses every other combination", () => {
    for (const action of actions.filter((a) => a !== WorkflowAction.UNSPECIFIED)) {
      for (const status of workflowStatuses) {
        const key = `${WorkflowAction[action]} ${workflowStatusName(status)}`;
        const want = expected[key];
        if (want === undefined) {
          expect(() => workflowStatusAfterAction(status, action), key).toThrow(
            new FailedPreconditionError(
              `cannot ${WorkflowAction[action]} workflow in status ${workflowStatusName(status)}`,
            ),
          );
        } else {
          expect(workflowStatusName(workflowStatusAfterAction(status, action)), key).toBe(want);
        }
      }
    }
  });

  it("says which action and state clash", () => {
    expect(() => workflowStatusAfterAction(WorkflowStatus.RUNNING, WorkflowAction.RESUME)).toThrow(
      "cannot RESUME workflow in status RUNNING",
    );
  });

  it("every result is an allowed workflow transition", () => {
    for (const key of Object.keys(expected)) {
      const [action, status] = key.split(" ") as [keyof typeof WorkflowAction, keyof typeof WorkflowStatus];
      const from = WorkflowStatus[status];
      expect(canTransitionWorkflow(from, workflowStatusAfterAction(from, WorkflowAction[action]))).toBe(true);
    }
  });

  it("rejects an unspecified action as INVALID_ARGUMENT on field action", () => {
    const attempt = () => workflowStatusAfterAction(WorkflowStatus.RUNNING, WorkflowAction.UNSPECIFIED);
    expect(attempt).toThrow(InvalidArgumentError);
    expect(attempt).toThrow("action: required");
  });

  it("rejects an unknown action as INVALID_ARGUMENT", () => {
    expect(() => workflowStatusAfterAction(WorkflowStatus.RUNNING, 42 as WorkflowAction)).toThrow(
      new InvalidArgumentError("action", "unknown action 42"),
    );
  });
});
