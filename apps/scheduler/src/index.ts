export * from "./app.js";
export * from "./config.js";
export * from "./event-relay.js";
export * from "./gauges.js";
export * from "./metrics.js";
export * from "./reconciler.js";
export * from "./schedule-ticker.js";
export * from "./scheduler.js";
