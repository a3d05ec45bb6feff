import { toJson } from "@bufbuild/protobuf";
import { durationMs, timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { EditsBuilder } from "./edits.js";
import { Throttled } from "./errors.js";
import { EditType } from "./gen/workflow/v1/workflow_pb.js";

describe("EditsBuilder", () => {
  it("inserts a node with its flow-control fields, start time and a wait with a timeout output", () => {
    const notBefore = new Date("2030-01-01T07:00:00Z");
    const [edit] = new EditsBuilder()
      .insert({
        id: "later",
        capability: "digest",
        limitKeys: ["tenant:acme"],
        priority: 5,
        notBefore,
        wait: { timeoutMs: 60_000, timeoutOutput: { approved: false } },
      })
      .list();

    expect(edit?.type).toBe(EditType.INSERT);
    expect(edit?.node).toMatchObject({ id: "later", capability: "digest", limitKeys: ["tenant:acme"], priority: 5 });
    expect(timestampMs(edit!.node!.notBefore!)).toBe(notBefore.getTime());
    expect(durationMs(edit!.node!.wait!.timeout!)).toBe(60_000);
    expect(edit?.node?.wait?.failOnTimeout).toBe(false);
    expect(toJson(ValueSchema, edit!.node!.wait!.timeoutOutput!)).toEqual({ approved: false });
  });

  it("builds an update's mask from the fields given, in the contract's names", () => {
    const [edit] = new EditsBuilder()
      .update("n", { name: "N", capability: "c", retryPolicy: { retryTaskErrors: true }, timeoutMs: 1000, labels: {} })
      .list();

    expect(edit?.updateMask?.paths).toEqual(["name", "capability", "retry_policy", "timeout", "labels"]);
    expect(edit?.node?.retryPolicy?.retryTaskErrors).toBe(true);
  });

  it("refuses an update that changes no field", () => {
    expect(() => new EditsBuilder().update("n", {})).toThrow('update of node "n" changes no field');
  });
});

describe("Throttled", () => {
  it("refuses a negative or non-finite retryAfterMs", () => {
    expect(() => new Throttled(-1)).toThrow(RangeError);
    expect(() => new Throttled(Number.NaN)).toThrow(RangeError);
    expect(new Throttled(0).retryAfterMs).toBe(0);
  });
});
