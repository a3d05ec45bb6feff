import { describe, expect, it } from "vitest";
import { CallSlots } from "./call-slots.js";

describe("CallSlots", () => {
  it("lets `size` holders in at once, the next waiter in order when one leaves", async () => {
    const slots = new CallSlots(2);
    const a = await slots.acquire();
    const b = await slots.acquire();
    expect(slots.inUse).toBe(2);
    const order: string[] = [];
    const inOrder = (name: string) => (release: () => void) => {
      order.push(name);
      return release;
    };
    const c = slots.acquire().then(inOrder("c"));
    const d = slots.acquire().then(inOrder("d"));
    await Promise.resolve();
    expect(order).toEqual([]);
    a();
    a(); // twice: one slot back, not two
    const releaseC = await c;
    expect(order).toEqual(["c"]);
    b();
    const releaseD = await d;
    expect(order).toEqual(["c", "d"]);
    releaseC();
    releaseD();
    expect(slots.inUse).toBe(0);
  });
});
