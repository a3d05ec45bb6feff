export * from "./app.js";
export * from "./config.js";
export type { WorkflowEventSource } from "./event-stream.js";
export { dashboardHttpMetrics } from "./http-metrics.js";
