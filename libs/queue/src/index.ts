export * from "./node-job.js";
export * from "./node-queues.js";
export * from "./redis.js";
export * from "./job-id.js";
export * from "./output-chunks.js";
export * from "./chunk-publisher.js";
export * from "./chunk-follower.js";
