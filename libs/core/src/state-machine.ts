import { NodeStatus, WorkflowAction, WorkflowStatus } from "@trellis/proto";
import { FailedPreconditionError, InvalidArgumentError } from "./errors.js";
import { quoteForMessage } from "./text.js";

/**
 * Every status a node may move to from each status. QUEUED -> PENDING is a pause taking a node back
 * off its queue (or a start finding its key throttled); RUNNING -> QUEUED is a retry, a throttle or a
 * lost lease; FAIL and SKIPPED -> PENDING is a workflow RETRY. A ready node with `wait` or a future
 * `not_before` is WAITING instead of QUEUED: a signal (or its timeout) ends it PASS or FAIL, its start
 * time sends it back to PENDING for the scheduler's claim. PASS and CANCELLED are final.
 */
export const NODE_TRANSITIONS: Readonly<Record<NodeStatus, readonly NodeStatus[]>> = {
  [NodeStatus.UNSPECIFIED]: [],
  [NodeStatus.PENDING]: [NodeStatus.QUEUED, NodeStatus.WAITING, NodeStatus.SKIPPED, NodeStatus.CANCELLED],
  [NodeStatus.QUEUED]: [NodeStatus.RUNNING, NodeStatus.PENDING, NodeStatus.SKIPPED, NodeStatus.CANCELLED],
  [NodeStatus.RUNNING]: [NodeStatus.PASS, NodeStatus.FAIL, NodeStatus.QUEUED, NodeStatus.CANCELLED],
  [NodeStatus.PASS]: [],
  [NodeStatus.FAIL]: [NodeStatus.PENDING],
  [NodeStatus.SKIPPED]: [NodeStatus.PENDING],
  [NodeStatus.CANCELLED]: [],
  [NodeStatus.WAITING]: [NodeStatus.PENDING, NodeStatus.PASS, NodeStatus.FAIL, NodeStatus.CANCELLED],
};

/**
 * Every status a workflow may move to from each status. FAILED -> RUNNING is a RETRY; SUCCEEDED and
 * CANCELLED are final.
 */
export const WORKFLOW_TRANSITIONS: Readonly<Record<WorkflowStatus, readonly WorkflowStatus[]>> = {
  [WorkflowStatus.UNSPECIFIED]: [],
  [WorkflowStatus.PENDING]: [
    WorkflowStatus.RUNNING,
    WorkflowStatus.PAUSED,
    WorkflowStatus.SUCCEEDED,
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
  ],
  [WorkflowStatus.RUNNING]: [
    WorkflowStatus.PAUSED,
    WorkflowStatus.SUCCEEDED,
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
  ],
  [WorkflowStatus.PAUSED]: [
    // RESUME of a workflow paused before any node was queued returns it to PENDING.
    WorkflowStatus.PENDING,
    WorkflowStatus.RUNNING,
    WorkflowStatus.SUCCEEDED,
    WorkflowStatus.FAILED,
    WorkflowStatus.CANCELLED,
  ],
  [WorkflowStatus.SUCCEEDED]: [],
  [WorkflowStatus.FAILED]: [WorkflowStatus.RUNNING],
  [WorkflowStatus.CANCELLED]: [],
};

/** The short name of a node status, e.g. `PASS` (`UNKNOWN(9)` for a value this build does not know). */
export function nodeStatusName(s: NodeStatus): string {
  return NodeStatus[s] ?? `UNKNOWN(${s})`;
}

/** The short name of a workflow status, e.g. `RUNNING`. */
export function workflowStatusName(s: WorkflowStatus): string {
  return WorkflowStatus[s] ?? `UNKNOWN(${s})`;
}

/** The short name of a workflow action, e.g. `RESUME`. */
export function workflowActionName(a: WorkflowAction): string {
  return WorkflowAction[a] ?? `UNKNOWN(${a})`;
}

/** Whether a node may move from `from` to `to`. */
export function canTransitionNode(from: NodeStatus, to: NodeStatus): boolean {
  return NODE_TRANSITIONS[from]?.includes(to) ?? false;
}

/** Throws FailedPreconditionError, e.g. `node "a" cannot go from PASS to RUNNING`, unless the move is allowed. */
export function assertNodeTransition(nodeId: string, from: NodeStatus, to: NodeStatus): void {
  if (!canTransitionNode(from, to)) {
    throw new FailedPreconditionError(
      `node ${quoteForMessage(nodeId)} cannot go from ${nodeStatusName(from)} to ${nodeStatusName(to)}`,
    );
  }
}

/** Whether a workflow may move from `from` to `to`. */
export function canTransitionWorkflow(from: WorkflowStatus, to: WorkflowStatus): boolean {
  return WORKFLOW_TRANSITIONS[from]?.includes(to) ?? false;
}

/** Throws FailedPreconditionError, e.g. `workflow "…" cannot go from SUCCEEDED to RUNNING`, unless allowed. */
export function assertWorkflowTransition(workflowId: string, from: WorkflowStatus, to: WorkflowStatus): void {
  if (!canTransitionWorkflow(from, to)) {
    throw new FailedPreconditionError(
      `workflow ${quoteForMessage(workflowId)} cannot go from ${workflowStatusName(from)} to ${workflowStatusName(to)}`,
    );
  }
}

/** Whether a node status is an end state of its attempt history: PASS, FAIL, SKIPPED or CANCELLED. */
export function isTerminalNodeStatus(s: NodeStatus): boolean {
  switch (s) {
    case NodeStatus.PASS:
    case NodeStatus.FAIL:
    case NodeStatus.SKIPPED:
    case NodeStatus.CANCELLED:
      return true;
    case NodeStatus.UNSPECIFIED:
    case NodeStatus.PENDING:
    case NodeStatus.QUEUED:
    case NodeStatus.RUNNING:
    case NodeStatus.WAITING:
      return false;
    default: {
      const _unknown: never = s;
      return false;
    }
  }
}

/** Whether a workflow status is terminal: SUCCEEDED, FAILED or CANCELLED (FAILED can still be retried). */
export function isTerminalWorkflowStatus(s: WorkflowStatus): boolean {
  switch (s) {
    case WorkflowStatus.SUCCEEDED:
    case WorkflowStatus.FAILED:
    case WorkflowStatus.CANCELLED:
      return true;
    case WorkflowStatus.UNSPECIFIED:
    case WorkflowStatus.PENDING:
    case WorkflowStatus.RUNNING:
    case WorkflowStatus.PAUSED:
      return false;
    default: {
      const _unknown: never = s;
      return false;
    }
  }
}

function refuse(action: WorkflowAction, current: WorkflowStatus): never {
  throw new FailedPreconditionError(
    `cannot ${workflowActionName(action)} workflow in status ${workflowStatusName(current)}`,
  );
}

/**
 * The status a workflow moves to under `action`: PAUSE from PENDING or RUNNING -> PAUSED; RESUME from
 * PAUSED -> RUNNING; CANCEL from PENDING, RUNNING or PAUSED -> CANCELLED; RETRY from FAILED -> RUNNING.
 * Anything else is a FailedPreconditionError (`cannot RESUME workflow in status RUNNING`); an
 * unspecified or unknown action is an InvalidArgumentError on field `action`.
 */
export function workflowStatusAfterAction(current: WorkflowStatus, action: WorkflowAction): WorkflowStatus {
  switch (action) {
    case WorkflowAction.UNSPECIFIED:
      throw new InvalidArgumentError("action", "required");
    case WorkflowAction.PAUSE:
      if (current === WorkflowStatus.PENDING || current === WorkflowStatus.RUNNING) return WorkflowStatus.PAUSED;
      return refuse(action, current);
    case WorkflowAction.RESUME:
      if (current === WorkflowStatus.PAUSED) return WorkflowStatus.RUNNING;
      return refuse(action, current);
    case WorkflowAction.CANCEL:
      if (
        current === WorkflowStatus.PENDING ||
        current === WorkflowStatus.RUNNING ||
        current === WorkflowStatus.PAUSED
      ) {
        return WorkflowStatus.CANCELLED;
      }
      return refuse(action, current);
    case WorkflowAction.RETRY:
      if (current === WorkflowStatus.FAILED) return WorkflowStatus.RUNNING;
      return refuse(action, current);
    default: {
      const unknown: never = action;
      throw new InvalidArgumentError("action", `unknown action ${String(unknown)}`);
    }
  }
}
