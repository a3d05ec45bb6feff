import type { Node } from "@trellis/proto";
import { InvalidArgumentError, ResourceExhaustedError } from "./errors.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
import { validateNodeSpec } from "./node-spec.js";
import { quoteForMessage } from "./text.js";

const ON_PATH = 1;
const DONE = 2;

/**
 * Finds a cycle among the ancestors of `roots` by an iterative depth-first search along parent
 * edges, so a 10,000-deep chain cannot overflow the stack. Returns the cycle as a closed path in
 * execution order (each node a parent of the next, the first repeated at the end, e.g.
 * `["a", "b", "c", "a"]`), or undefined when there is none. Deterministic: roots are tried in
 * order and parents in list order. `parentsOf` returning undefined means an unknown node, which is
 * skipped. O(V+E) over the nodes reached.
 */
export function findCycle(
  roots: Iterable<string>,
  parentsOf: (id: string) => readonly string[] | undefined,
): string[] | undefined {
  const state = new Map<string, number>();
  const path: string[] = [];
  const pathParents: (readonly string[])[] = [];
  const nextParent: number[] = [];
  for (const root of roots) {
    if (state.has(root)) continue;
    const rootParents = parentsOf(root);
    if (rootParents === undefined) continue;
    state.set(root, ON_PATH);
    path.push(root);
    pathParents.push(rootParents);
    nextParent.push(0);
    while (path.length > 0) {
      const top = path.length - 1;
      const parents = pathParents[top]!;
      const j = nextParent[top]!;
      if (j >= parents.length) {
        state.set(path[top]!, DONE);
        path.pop();
        pathParents.pop();
        nextParent.pop();
        continue;
      }
      nextParent[top] = j + 1;
      const parent = parents[j]!;
      const seen = state.get(parent);
      if (seen === ON_PATH) {
        // path[k+1] is a parent of path[k]; `parent` closes the loop, so in execution order the
        // cycle runs parent -> path[top] -> path[top-1] -> ... -> parent.
        const start = path.lastIndexOf(parent);
        const cycle = [parent];
        for (let k = top; k > start; k--) cycle.push(path[k]!);
        cycle.push(parent);
        return cycle;
      }
      if (seen === DONE) continue;
      const grandParents = parentsOf(parent);
      if (grandParents === undefined) continue;
      state.set(parent, ON_PATH);
      path.push(parent);
      pathParents.push(grandParents);
      nextParent.push(0);
    }
  }
  return undefined;
}

/** The reason of a cycle error: `cycle a -> b -> a`. */
export function describeCycle(cycle: readonly string[]): string {
  return `cycle ${cycle.join(" -> ")}`;
}

/** A binary min-heap of non-negative integers. */
class IndexHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  push(value: number): void {
    const items = this.items;
    let i = items.push(value) - 1;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (items[up]! <= value) break;
      items[i] = items[up]!;
      i = up;
    }
    items[i] = value;
  }

  pop(): number {
    const items = this.items;
    const top = items[0]!;
    const last = items.pop()!;
    if (items.length > 0) {
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= items.length) break;
        const right = left + 1;
        const child = right < items.length && items[right]! < items[left]! ? right : left;
        if (items[child]! >= last) break;
        items[i] = items[child]!;
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}

/**
 * The ids in an order where every parent comes before its children. Stable: among nodes that are
 * ready together the one earlier in `ids` comes first, so an already ordered list comes back
 * unchanged. Parents not in `ids` are ignored; a repeated id is kept once. Throws
 * InvalidArgumentError("nodes", "cycle a -> b -> a") when the parents form a cycle.
 */
export function topologicalOrder<T extends string = string>(
  ids: readonly T[],
  parentsOf: (id: T) => readonly string[],
): T[] {
  const indexOf = new Map<string, number>();
  const unique: T[] = [];
  for (const id of ids) {
    if (!indexOf.has(id)) {
      indexOf.set(id, unique.length);
      unique.push(id);
    }
  }
  const n = unique.length;
  const pendingParents = new Int32Array(n);
  const children: number[][] = Array.from({ length: n }, () => []);
  const knownParents: (readonly string[])[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const known: string[] = [];
    for (const parent of parentsOf(unique[i]!)) {
      const p = indexOf.get(parent);
      if (p === undefined) continue;
      known.push(parent);
      children[p]!.push(i);
      pendingParents[i] = pendingParents[i]! + 1;
    }
    knownParents[i] = known;
  }
  const ready = new IndexHeap();
  for (let i = 0; i < n; i++) if (pendingParents[i] === 0) ready.push(i);
  const order: T[] = [];
  while (ready.size > 0) {
    const i = ready.pop();
    order.push(unique[i]!);
    for (const c of children[i]!) {
      const left = pendingParents[c]! - 1;
      pendingParents[c] = left;
      if (left === 0) ready.push(c);
    }
  }
  if (order.length < n) {
    const stuck = unique.filter((_, i) => pendingParents[i]! > 0);
    const cycle = findCycle(stuck, (id) => {
      const i = indexOf.get(id);
      return i === undefined ? undefined : knownParents[i];
    });
    throw new InvalidArgumentError("nodes", describeCycle(cycle ?? stuck));
  }
  return order;
}

/**
 * Validates the nodes of a new workflow as one DAG: at least one node and at most `maxNodes`, every
 * node well-formed ({@link validateNodeSpec}), ids unique, every parent a node of the list, no
 * cycle. Throws the first problem found, with field paths under `field` (e.g.
 * `nodes[3].parent_ids[0]: unknown node "ghost"`). O(V+E), no recursion.
 */
export function validateWorkflowNodes(
  nodes: readonly Node[],
  limits: WorkflowLimits = DEFAULT_LIMITS,
  field = "nodes",
): void {
  if (nodes.length === 0) throw new InvalidArgumentError(field, "at least one node is required");
  if (nodes.length > limits.maxNodes) {
    throw new ResourceExhaustedError(field, `at most ${limits.maxNodes} nodes are allowed, got ${nodes.length}`);
  }
  const indexOf = new Map<string, number>();
  for (const [i, node] of nodes.entries()) {
    validateNodeSpec(node, `${field}[${i}]`, limits);
    const first = indexOf.get(node.id);
    if (first !== undefined) {
      throw new InvalidArgumentError(
        `${field}[${i}].id`,
        `duplicate node id ${quoteForMessage(node.id)} (also ${field}[${first}])`,
      );
    }
    indexOf.set(node.id, i);
  }
  for (const [i, node] of nodes.entries()) {
    for (const [j, parentId] of node.parentIds.entries()) {
      if (!indexOf.has(parentId)) {
        throw new InvalidArgumentError(`${field}[${i}].parent_ids[${j}]`, `unknown node ${quoteForMessage(parentId)}`);
      }
    }
  }
  const cycle = findCycle(
    nodes.map((node) => node.id),
    (id) => {
      const i = indexOf.get(id);
      return i === undefined ? undefined : nodes[i]!.parentIds;
    },
  );
  if (cycle !== undefined) throw new InvalidArgumentError(field, describeCycle(cycle));
}
