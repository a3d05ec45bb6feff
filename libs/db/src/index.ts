export * from "./channels.js";
export * from "./mapping.js";
export * from "./migrate.js";
export * from "./pg-state-manager.js";
export * from "./pool.js";
export * from "./schema.js";
export * from "./state-manager.js";
export { WorkflowChanges, lockWorkflow, type Tx } from "./workflow-changes.js";
export * from "./listener.js";
