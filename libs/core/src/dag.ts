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

/**
 * A graph over nodes 0..n-1 in compressed form: the parents of node `v` are
 * `parents[offsets[v]] .. parents[offsets[v + 1] - 1]`, in list order.
 */
interface IndexedGraph {
  offsets: Int32Array;
  parents: Int32Array;
}

/** {@link findCycle} over an {@link IndexedGraph}, trying roots 0..n-1 in order; typed arrays only. */
function findIndexedCycle({ offsets, parents }: IndexedGraph): number[] | undefined {
  const n = offsets.length - 1;
  const state = new Uint8Array(n);
  const path = new Int32Array(n);
  const nextEdge = new Int32Array(n);
  for (let root = 0; root < n; root++) {
    if (state[root] !== 0) continue;
    let depth = 0;
    path[0] = root;
    nextEdge[0] = offsets[root]!;
    state[root] = ON_PATH;
    while (depth >= 0) {
      const v = path[depth]!;
      const edge = nextEdge[depth]!;
      if (edge >= offsets[v + 1]!) {
        state[v] = DONE;
        depth--;
        continue;
      }
      nextEdge[depth] = edge + 1;
      const parent = parents[edge]!;
      if (state[parent] === ON_PATH) {
        const cycle = [parent];
        for (let k = depth; path[k] !== parent; k--) cycle.push(path[k]!);
        cycle.push(parent);
        return cycle;
      }
      if (state[parent] === 0) {
        depth++;
        path[depth] = parent;
        nextEdge[depth] = offsets[parent]!;
        state[parent] = ON_PATH;
      }
    }
  }
  return undefined;
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
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!indexOf.has(id)) {
      indexOf.set(id, unique.length);
      unique.push(id);
    }
  }
  const n = unique.length;
  const offsets = new Int32Array(n + 1);
  const flat: number[] = [];
  const pendingParents = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const parentIds = parentsOf(unique[i]!);
    for (let j = 0; j < parentIds.length; j++) {
      const p = indexOf.get(parentIds[j]!);
      if (p !== undefined) flat.push(p);
    }
    offsets[i + 1] = flat.length;
    pendingParents[i] = flat.length - offsets[i]!;
  }
  const graph: IndexedGraph = { offsets, parents: Int32Array.from(flat) };
  // Children lists in the same compressed form, for Kahn's algorithm.
  const childOffsets = new Int32Array(n + 1);
  for (const p of graph.parents) childOffsets[p + 1] = childOffsets[p + 1]! + 1;
  for (let i = 0; i < n; i++) childOffsets[i + 1] = childOffsets[i + 1]! + childOffsets[i]!;
  const children = new Int32Array(graph.parents.length);
  const fill = childOffsets.slice(0, n);
  for (let c = 0; c < n; c++) {
    for (let e = offsets[c]!; e < offsets[c + 1]!; e++) {
      const p = graph.parents[e]!;
      children[fill[p]!] = c;
      fill[p] = fill[p]! + 1;
    }
  }
  const ready = new IndexHeap();
  for (let i = 0; i < n; i++) if (pendingParents[i] === 0) ready.push(i);
  const order: T[] = [];
  while (ready.size > 0) {
    const i = ready.pop();
    order.push(unique[i]!);
    for (let e = childOffsets[i]!; e < childOffsets[i + 1]!; e++) {
      const c = children[e]!;
      const left = pendingParents[c]! - 1;
      pendingParents[c] = left;
      if (left === 0) ready.push(c);
    }
  }
  if (order.length < n) {
    const cycle = findIndexedCycle(graph) ?? [];
    throw new InvalidArgumentError("nodes", describeCycle(cycle.map((i) => unique[i]!)));
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
  const n = nodes.length;
  const indexOf = new Map<string, number>();
  let edgeCount = 0;
  for (let i = 0; i < n; i++) {
    const node = nodes[i]!;
    validateNodeSpec(node, `${field}[${i}]`, limits);
    const first = indexOf.get(node.id);
    if (first !== undefined) {
      throw new InvalidArgumentError(
        `${field}[${i}].id`,
        `duplicate node id ${quoteForMessage(node.id)} (also ${field}[${first}])`,
      );
    }
    indexOf.set(node.id, i);
    edgeCount += node.parentIds.length;
  }
  const offsets = new Int32Array(n + 1);
  const parents = new Int32Array(edgeCount);
  let e = 0;
  for (let i = 0; i < n; i++) {
    const parentIds = nodes[i]!.parentIds;
    for (let j = 0; j < parentIds.length; j++) {
      const p = indexOf.get(parentIds[j]!);
      if (p === undefined) {
        throw new InvalidArgumentError(
          `${field}[${i}].parent_ids[${j}]`,
          `unknown node ${quoteForMessage(parentIds[j]!)}`,
        );
      }
      parents[e++] = p;
    }
    offsets[i + 1] = e;
  }
  const cycle = findIndexedCycle({ offsets, parents });
  if (cycle !== undefined) throw new InvalidArgumentError(field, describeCycle(cycle.map((i) => nodes[i]!.id)));
}
