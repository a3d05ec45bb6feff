import { describe, expect, it } from "vitest";
import { CallSlots } from "./call-slots.js";

describe("CallSlots", () => {
  it("lets `size` holders in at once, the next waiter in order when one leaves", async () => {
    const slots = new CallSlots(2);
    const a = await slots.acquire();
    const b = await slots.acquire();
    expect(slots.inUse).toBe(2);
    const order: string[] = [];
    const inOrder =
      (name: string) =>
      <T>(slot: T) => {
        order.push(name);
        return slot;
      };
    const c = slots.acquire().then(inOrder("c"));
    const d = slots.acquire().then(inOrder("d"));
    await Promise.resolve();
    expect(order).toEqual([]);
    a.end();
    a.end(); // twice: one slot back, not two
    const slotC = await c;
    expect(order).toEqual(["c"]);
    b.end();
    const slotD = await d;
    expect(order).toEqual(["c", "d"]);
    slotC.end();
    slotD.end();
    expect(slots.inUse).toBe(0);
  });

  it("lends a released slot's job room until it ends", async () => {
    const slots = new CallSlots(1);
    const lent: number[] = [];
    slots.onLend = (delta) => lent.push(delta);
    const slot = await slots.acquire();
    slot.release();
    slot.release();
    expect(slots.inUse).toBe(0);
    expect(lent).toEqual([1]);
    const next = await slots.acquire();
    expect(slots.inUse).toBe(1);
    slot.end();
    slot.end();
    expect(lent).toEqual([1, -1]);
    expect(slots.inUse).toBe(1);
    next.end();
    expect(slots.inUse).toBe(0);
    expect(lent).toEqual([1, -1]);
  });
});
