export * from "./node-job.js";
export * from "./node-queues.js";
export * from "./redis.js";
export * from "./job-id.js";
