import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // @trellis/node-sdk is published built (its exports point to dist/); inside the repository it runs from source.
    alias: { "@trellis/node-sdk": fileURLToPath(new URL("./libs/node-sdk/src/index.ts", import.meta.url)) },
  },
  test: {
    include: [
      "libs/*/src/**/*.test.ts",
      "libs/*/test/**/*.test.ts",
      "apps/*/src/**/*.test.ts",
      "apps/*/test/**/*.test.ts",
      "test/**/*.test.ts",
    ],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Each file isolates itself (own database, own QUEUE_PREFIX), so files run in parallel.
    fileParallelism: true,
  },
});
