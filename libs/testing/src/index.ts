export * from "./database.js";
export * from "./node-service-server.js";
export * from "./wait-for.js";
