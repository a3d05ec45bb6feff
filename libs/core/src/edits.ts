import { create, type JsonObject } from "@bufbuild/protobuf";
import { type Duration, durationFromMs, type FieldMask } from "@bufbuild/protobuf/wkt";
import { EditType, type Node, type NodeEdit, NodeStatus, type RetryPolicy, RetryPolicySchema } from "@trellis/proto";
import { describeCycle, findCycle } from "./dag.js";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError, ResourceExhaustedError } from "./errors.js";
import { validateLimitKeys, validatePriority } from "./flow-control.js";
import { assertCapability } from "./ids.js";
import { validateInput } from "./input.js";
import { validateLabels } from "./labels.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
import { validateName } from "./names.js";
import {
  copyDuration,
  copyJsonObject,
  copyRetryPolicy,
  normalizeNewNode,
  validateNodeSpec,
  validateParentIds,
  validateRetryPolicy,
  validateTimeout,
} from "./node-spec.js";
import { DEFAULT_NODE_TIMEOUT_MS } from "./retry.js";
import { nodeStatusName } from "./state-machine.js";
import { quoteForMessage } from "./text.js";

/** What edit validation needs to know about a node already in the workflow. */
export interface GraphNode {
  /** The node's id. */
  id: string;
  /** Its current status; only PENDING nodes may be updated or deleted. */
  status: NodeStatus;
  /** Its current parents. */
  parentIds: readonly string[];
}

/**
 * The new values of the fields an UPDATE names in its mask, and only those: a key is present (and
 * never undefined) exactly when its field was masked. A masked field the caller left empty clears it:
 * `name` becomes the id, `input` and `labels` become `{}`, `parentIds` and `limitKeys` `[]`, `priority` 0,
 * `retryPolicy` an empty policy (all defaults) and `timeout` the default timeout ({@link DEFAULT_NODE_TIMEOUT_MS}).
 */
export interface NodeFieldChanges {
  /** New name (the node id when cleared). */
  name?: string;
  /** New capability (never empty). */
  capability?: string;
  /** New parent ids. */
  parentIds?: string[];
  /** New input (`{}` when cleared). */
  input?: JsonObject;
  /** New retry policy (an empty policy when cleared). */
  retryPolicy?: RetryPolicy;
  /** New per-attempt timeout (the default, 5m, when cleared). */
  timeout?: Duration;
  /** New labels (`{}` when cleared), replacing the old ones wholesale. */
  labels?: Record<string, string>;
  /** New priority, 0..10 (0 when cleared). */
  priority?: number;
  /** New flow-control keys (`[]` when cleared), replacing the old ones wholesale. */
  limitKeys?: string[];
}

/** One accepted UPDATE: the node and its masked field values. */
export interface NodeUpdate {
  /** The updated node's id. */
  id: string;
  /** The masked fields' new values. */
  changes: NodeFieldChanges;
}

/** An edit batch that passed validation, ready to apply in one transaction. */
export interface EditPlan {
  /** New nodes in edit order: deep copies, name defaulted to the id, output-only fields cleared. */
  inserts: Node[];
  /** Updates in edit order. */
  updates: NodeUpdate[];
  /** Ids of the nodes to delete, in edit order. */
  deletes: string[];
  /** Parent ids, after the batch, of every inserted node and every node whose parent_ids were updated. */
  parentsAfter: ReadonlyMap<string, readonly string[]>;
}

/** The field paths an UPDATE's `update_mask` may name (snake_case, as on the wire). */
export const UPDATABLE_NODE_FIELDS: readonly string[] = [
  "name",
  "capability",
  "parent_ids",
  "input",
  "retry_policy",
  "timeout",
  "labels",
  "priority",
  "limit_keys",
];

/** One of {@link UPDATABLE_NODE_FIELDS}. */
export type UpdatableNodeField =
  | "name"
  | "capability"
  | "parent_ids"
  | "input"
  | "retry_policy"
  | "timeout"
  | "labels"
  | "priority"
  | "limit_keys";

/** Whether `path` is one of {@link UPDATABLE_NODE_FIELDS}. */
export function isUpdatableNodeField(path: string): path is UpdatableNodeField {
  return UPDATABLE_NODE_FIELDS.includes(path);
}

/** A check that needs the whole batch, run after every edit has been read, in edit order. */
type PendingCheck =
  | { kind: "parents"; parentIds: readonly string[]; field: string }
  | { kind: "delete"; id: string; field: string };

/** Collects one batch's edits, validating each as it comes, then checks the graph it would leave. */
class EditBatchPlanner {
  private readonly inserts: Node[] = [];
  private readonly updates: NodeUpdate[] = [];
  private readonly deletes: string[] = [];
  private readonly parentsAfter = new Map<string, readonly string[]>();
  /** Node id -> the edit that touches it (e.g. `edits[3]`). */
  private readonly touched = new Map<string, string>();
  private readonly insertedIds = new Set<string>();
  private readonly checks: PendingCheck[] = [];

  constructor(
    private readonly graph: ReadonlyMap<string, GraphNode>,
    private readonly limits: WorkflowLimits,
    /** Node id -> `edits[k]` of the DELETE that removes it, known before any edit is read. */
    private readonly deletedBy: ReadonlyMap<string, string>,
  ) {}

  insert(node: Node | undefined, edit: string, nodeField: string): void {
    if (node === undefined) throw new InvalidArgumentError(nodeField, "required");
    validateNodeSpec(node, nodeField, this.limits);
    const id = node.id;
    const idField = `${nodeField}.id`;
    if (this.graph.has(id)) {
      const deleter = this.deletedBy.get(id);
      throw new InvalidArgumentError(
        idField,
        deleter === undefined
          ? `node ${quoteForMessage(id)} already exists`
          : `node ${quoteForMessage(id)} is deleted by ${deleter}; an id cannot be reused in the same batch`,
      );
    }
    const earlier = this.touched.get(id);
    if (earlier !== undefined) {
      throw new InvalidArgumentError(idField, `duplicate node id ${quoteForMessage(id)} (also ${earlier})`);
    }
    this.touched.set(id, edit);
    this.insertedIds.add(id);
    const stored = normalizeNewNode(node);
    this.inserts.push(stored);
    this.parentsAfter.set(id, [...stored.parentIds]);
    this.checks.push({ kind: "parents", parentIds: stored.parentIds, field: `${nodeField}.parent_ids` });
  }

  update(
    node: Node | undefined,
    edit: string,
    mask: FieldMask | undefined,
    nodeField: string,
    maskField: string,
    unknownNode: (id: string) => Error,
  ): void {
    if (node === undefined) throw new InvalidArgumentError(nodeField, "required");
    const id = node.id;
    const idField = `${nodeField}.id`;
    if (id === "") throw new InvalidArgumentError(idField, "required");
    const current = this.graph.get(id);
    if (current === undefined) throw unknownNode(id);
    this.claim(id, idField, edit);
    const paths = this.maskPaths(mask, maskField);
    const changes: NodeFieldChanges = {};
    for (const path of paths) this.applyPath(changes, path, node, id, nodeField);
    if (current.status !== NodeStatus.PENDING) {
      throw new FailedPreconditionError(
        `node ${quoteForMessage(id)} is ${nodeStatusName(current.status)}; only PENDING nodes can be updated`,
      );
    }
    if (changes.parentIds !== undefined) {
      this.parentsAfter.set(id, [...changes.parentIds]);
      this.checks.push({ kind: "parents", parentIds: changes.parentIds, field: `${nodeField}.parent_ids` });
    }
    this.updates.push({ id, changes });
  }

  delete(nodeId: string, edit: string, idField: string): void {
    if (nodeId === "") throw new InvalidArgumentError(idField, "required");
    const current = this.graph.get(nodeId);
    if (current === undefined) throw new InvalidArgumentError(idField, `unknown node ${quoteForMessage(nodeId)}`);
    this.claim(nodeId, idField, edit);
    if (current.status !== NodeStatus.PENDING) {
      throw new FailedPreconditionError(
        `node ${quoteForMessage(nodeId)} is ${nodeStatusName(current.status)}; only PENDING nodes can be deleted`,
      );
    }
    this.deletes.push(nodeId);
    this.checks.push({ kind: "delete", id: nodeId, field: idField });
  }

  /** Checks the graph as it would be after the batch and returns the plan. */
  finish(batchField: string, cycleField: string): EditPlan {
    const nodeCount = this.graph.size - this.deletes.length + this.inserts.length;
    if (nodeCount > this.limits.maxNodes) {
      throw new ResourceExhaustedError(
        batchField,
        `the workflow would have ${nodeCount} nodes; at most ${this.limits.maxNodes} are allowed`,
      );
    }
    const deleted = new Set(this.deletes);
    const keptChildOf = this.remainingChildrenOfDeleted(deleted);
    for (const check of this.checks) {
      if (check.kind === "parents") {
        for (const [j, parentId] of check.parentIds.entries()) {
          if (this.insertedIds.has(parentId) || (this.graph.has(parentId) && !deleted.has(parentId))) continue;
          const deleter = deleted.has(parentId) ? this.touched.get(parentId) : undefined;
          throw new InvalidArgumentError(
            `${check.field}[${j}]`,
            deleter === undefined
              ? `unknown node ${quoteForMessage(parentId)}`
              : `node ${quoteForMessage(parentId)} is deleted by ${deleter}`,
          );
        }
      } else {
        const child = keptChildOf.get(check.id);
        if (child !== undefined) {
          throw new InvalidArgumentError(
            check.field,
            `node ${quoteForMessage(check.id)} is still a parent of ${quoteForMessage(child)}`,
          );
        }
      }
    }
    const cycle = findCycle(this.parentsAfter.keys(), (id) => {
      const changed = this.parentsAfter.get(id);
      if (changed !== undefined) return changed;
      return deleted.has(id) ? undefined : this.graph.get(id)?.parentIds;
    });
    if (cycle !== undefined) throw new InvalidArgumentError(cycleField, describeCycle(cycle));
    return { inserts: this.inserts, updates: this.updates, deletes: this.deletes, parentsAfter: this.parentsAfter };
  }

  /**
   * For each deleted node, the first node of the graph that stays, keeps its parents, and lists it as
   * a parent. (A node whose parents change, or a new node, is checked against its own edit instead.)
   */
  private remainingChildrenOfDeleted(deleted: ReadonlySet<string>): Map<string, string> {
    const childOf = new Map<string, string>();
    if (deleted.size === 0) return childOf;
    for (const [id, node] of this.graph) {
      if (deleted.has(id) || this.parentsAfter.has(id)) continue;
      for (const parentId of node.parentIds) {
        if (deleted.has(parentId) && !childOf.has(parentId)) childOf.set(parentId, id);
      }
    }
    return childOf;
  }

  private claim(id: string, idField: string, edit: string): void {
    const earlier = this.touched.get(id);
    if (earlier !== undefined) {
      throw new InvalidArgumentError(
        idField,
        `node ${quoteForMessage(id)} is also touched by ${earlier}; a node may be touched by only one edit per batch`,
      );
    }
    this.touched.set(id, edit);
  }

  private maskPaths(mask: FieldMask | undefined, maskField: string): UpdatableNodeField[] {
    if (mask === undefined) throw new InvalidArgumentError(maskField, "required");
    if (mask.paths.length === 0) throw new InvalidArgumentError(maskField, "must name at least one field");
    const seen = new Set<string>();
    const paths: UpdatableNodeField[] = [];
    for (const [j, path] of mask.paths.entries()) {
      const pathField = `${maskField}.paths[${j}]`;
      if (!isUpdatableNodeField(path)) {
        throw new InvalidArgumentError(pathField, `${quoteForMessage(path)} cannot be updated`);
      }
      if (seen.has(path)) throw new InvalidArgumentError(pathField, `duplicate path ${quoteForMessage(path)}`);
      seen.add(path);
      paths.push(path);
    }
    return paths;
  }

  private applyPath(changes: NodeFieldChanges, path: UpdatableNodeField, node: Node, id: string, field: string): void {
    switch (path) {
      case "name":
        validateName(node.name, `${field}.name`);
        changes.name = node.name === "" ? id : node.name;
        return;
      case "capability":
        assertCapability(node.capability, `${field}.capability`);
        changes.capability = node.capability;
        return;
      case "parent_ids":
        validateParentIds(node.parentIds, id, `${field}.parent_ids`, this.limits);
        changes.parentIds = [...node.parentIds];
        return;
      case "input":
        validateInput(node.input, `${field}.input`, this.limits);
        changes.input = node.input === undefined ? {} : copyJsonObject(node.input);
        return;
      case "retry_policy":
        validateRetryPolicy(node.retryPolicy, `${field}.retry_policy`);
        changes.retryPolicy =
          node.retryPolicy === undefined ? create(RetryPolicySchema) : copyRetryPolicy(node.retryPolicy);
        return;
      case "timeout":
        validateTimeout(node.timeout, `${field}.timeout`);
        changes.timeout =
          node.timeout === undefined ? durationFromMs(DEFAULT_NODE_TIMEOUT_MS) : copyDuration(node.timeout);
        return;
      case "labels":
        validateLabels(node.labels, `${field}.labels`, this.limits);
        changes.labels = { ...node.labels };
        return;
      case "priority":
        validatePriority(node.priority, `${field}.priority`);
        changes.priority = node.priority;
        return;
      case "limit_keys":
        validateLimitKeys(node.limitKeys, `${field}.limit_keys`);
        changes.limitKeys = [...node.limitKeys];
        return;
      default: {
        const unknown: never = path;
        throw new InvalidArgumentError(field, `${quoteForMessage(String(unknown))} cannot be updated`);
      }
    }
  }
}

/**
 * Validates a batch of NodeEdits as one (CONTRACT §2) against `graph` as it would be after the
 * batch, and returns what to apply. INSERT: a well-formed node with a new id. UPDATE: an existing
 * PENDING node and a non-empty mask of {@link UPDATABLE_NODE_FIELDS}. DELETE: an existing PENDING
 * node. Each node is touched by at most one edit; afterwards every parent exists, no remaining node
 * keeps a deleted parent, there is no cycle, and the limits hold. Throws the first problem found —
 * each edit's own checks in edit order, then the node count, then parents and deletions in edit
 * order, then cycles — with field paths like `edits[2].node.capability` (a cycle on field `field`,
 * printed `cycle a -> b -> a` with each node a parent of the next). Never mutates its inputs.
 * O(V+E) over the whole graph.
 */
export function planEdits(
  graph: ReadonlyMap<string, GraphNode>,
  edits: readonly NodeEdit[],
  limits: WorkflowLimits = DEFAULT_LIMITS,
  field = "edits",
): EditPlan {
  if (edits.length > limits.maxEditsPerBatch) {
    throw new ResourceExhaustedError(
      field,
      `at most ${limits.maxEditsPerBatch} edits are allowed per batch, got ${edits.length}`,
    );
  }
  const deletedBy = new Map<string, string>();
  for (const [i, edit] of edits.entries()) {
    if (edit.type === EditType.DELETE && !deletedBy.has(edit.nodeId)) deletedBy.set(edit.nodeId, `${field}[${i}]`);
  }
  const planner = new EditBatchPlanner(graph, limits, deletedBy);
  for (const [i, edit] of edits.entries()) {
    const editField = `${field}[${i}]`;
    switch (edit.type) {
      case EditType.INSERT:
        planner.insert(edit.node, editField, `${editField}.node`);
        break;
      case EditType.UPDATE:
        planner.update(
          edit.node,
          editField,
          edit.updateMask,
          `${editField}.node`,
          `${editField}.update_mask`,
          (id) => new InvalidArgumentError(`${editField}.node.id`, `unknown node ${quoteForMessage(id)}`),
        );
        break;
      case EditType.DELETE:
        planner.delete(edit.nodeId, editField, `${editField}.node_id`);
        break;
      case EditType.UNSPECIFIED:
        throw new InvalidArgumentError(`${editField}.type`, "required");
      default: {
        const unknown: never = edit.type;
        throw new InvalidArgumentError(`${editField}.type`, `unknown edit type ${String(unknown)}`);
      }
    }
  }
  return planner.finish(field, field);
}

/**
 * Validates an UpdateNode request: the same rules as one UPDATE edit, with field paths under `field`
 * (`node.capability`) and `update_mask` (`update_mask.paths[0]`). An unknown node is a NotFoundError;
 * a cycle is reported on `node.parent_ids`.
 */
export function planNodeUpdate(
  graph: ReadonlyMap<string, GraphNode>,
  node: Node | undefined,
  updateMask: FieldMask | undefined,
  limits: WorkflowLimits = DEFAULT_LIMITS,
  field = "node",
): EditPlan {
  const planner = new EditBatchPlanner(graph, limits, new Map());
  planner.update(
    node,
    field,
    updateMask,
    field,
    "update_mask",
    (id) => new NotFoundError(`node ${quoteForMessage(id)} not found`),
  );
  return planner.finish(field, `${field}.parent_ids`);
}
