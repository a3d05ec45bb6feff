/** Size limits applied when a workflow is created or edited. */
export interface WorkflowLimits {
  /** Nodes in one workflow, after any edit batch. Exceeding it is RESOURCE_EXHAUSTED. @default 10_000 */
  maxNodes: number;
  /** Bytes of one node's `input` as UTF-8 JSON. Exceeding it is RESOURCE_EXHAUSTED. @default 1_048_576 */
  maxInputBytes: number;
  /** Parents of one node. Exceeding it is INVALID_ARGUMENT. @default 1_000 */
  maxParents: number;
  /** Edits in one batch. Exceeding it is RESOURCE_EXHAUSTED. @default 10_000 */
  maxEditsPerBatch: number;
  /** Labels on one node or workflow. Exceeding it is INVALID_ARGUMENT. @default 64 */
  maxLabels: number;
}

/** The limits used when none are configured. */
export const DEFAULT_LIMITS: WorkflowLimits = {
  maxNodes: 10_000,
  maxInputBytes: 1_048_576,
  maxParents: 1_000,
  maxEditsPerBatch: 10_000,
  maxLabels: 64,
};
