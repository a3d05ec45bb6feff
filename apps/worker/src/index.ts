export * from "./app.js";
export * from "./config.js";
export * from "./held-leases.js";
export * from "./metrics.js";
export * from "./node-runner.js";
export * from "./node-service-client.js";
export * from "./node-worker.js";
export * from "./batcher.js";
