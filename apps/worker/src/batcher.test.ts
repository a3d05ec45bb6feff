import { describe, expect, it } from "vitest";
import { waitFor } from "@trellis/testing";
import { Batcher } from "./batcher.js";

describe("Batcher", () => {
  it("flushes the items of one turn together and groups the ones that arrive while a flush runs", async () => {
    const batches: number[][] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const batcher = new Batcher(
      async (items: number[]) => {
        batches.push(items);
        if (batches.length === 1) await gate;
        return items.map((i) => i * 10);
      },
      { maxInFlight: 1, maxBatch: 3 },
    );
    const first = [batcher.run(1), batcher.run(2)];
    await waitFor(() => batches.length === 1, { description: "the first flush" });
    const later = [batcher.run(3), batcher.run(4), batcher.run(5), batcher.run(6)];
    release();
    expect(await Promise.all([...first, ...later])).toEqual([10, 20, 30, 40, 50, 60]);
    expect(batches).toEqual([[1, 2], [3, 4, 5], [6]]);
  });

  it("retries a failed batch item by item so only the bad item fails", async () => {
    const batcher = new Batcher(
      async (items: number[]) => {
        if (items.includes(13)) throw new Error("unlucky");
        return items;
      },
      { maxInFlight: 1 },
    );
    const first = batcher.run(1);
    const rest = [batcher.run(2), batcher.run(13), batcher.run(4)].map((p) =>
      p.then(
        (v) => v,
        (e: Error) => e.message,
      ),
    );
    expect(await first).toBe(1);
    expect(await Promise.all(rest)).toEqual([2, "unlucky", 4]);
  });
});
