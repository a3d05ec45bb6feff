export * from "./database.js";
export * from "./wait-for.js";
