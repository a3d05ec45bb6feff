import { describe, expect, it } from "vitest";
import { parseUnqueuedJobs, unqueuedPayloads } from "./channels.js";

const WF = "9c33e512-4976-4534-bc55-52fee1880a49";

describe("unqueued-jobs notifications", () => {
  it("carry every job, in payloads under PostgreSQL's 8000-byte limit", () => {
    const jobs = Array.from({ length: 5_000 }, (_, i) => ({ capability: "llm.chat", jobId: `${WF}/node-${i}/3` }));
    const payloads = unqueuedPayloads(WF, jobs);
    expect(payloads.length).toBeGreaterThan(1);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(8_000);
    const parsed = payloads.map((p) => parseUnqueuedJobs(p)!);
    expect(parsed.every((p) => p.workflowId === WF)).toBe(true);
    expect(parsed.flatMap((p) => p.jobs)).toEqual(jobs);
  });

  it("are none without jobs, and a malformed payload reads as null", () => {
    expect(unqueuedPayloads(WF, [])).toEqual([]);
    expect(parseUnqueuedJobs("not json")).toBeNull();
    expect(parseUnqueuedJobs(JSON.stringify({ jobs: [] }))).toBeNull();
    expect(parseUnqueuedJobs(JSON.stringify({ workflowId: WF, jobs: [{ capability: 1 }] }))).toEqual({
      workflowId: WF,
      jobs: [],
    });
  });
});
