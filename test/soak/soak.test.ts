// The short soak of CI (`npm test`): about a minute of mixed load with a worker restarted every 25 s. The long one is
// `npm run soak -- --minutes N`.
import { recordMeasurement } from "@trellis/testing";
import { describe, expect, it } from "vitest";
import { plateau, runSoak, saveSoakReport } from "./soak.js";

describe("soak", () => {
  it("a minute of mixed load with worker restarts: I1-I5 hold, footprint flat", async () => {
    const report = await runSoak({
      durationMs: Number(process.env.SOAK_CI_MS ?? 60_000),
      restartEveryMs: 25_000,
      sampleEveryMs: 5_000,
    });
    saveSoakReport(report);
    recordMeasurement("soak (CI)", {
      durationS: report.durationS,
      nodes: report.nodes,
      workflows: JSON.stringify(report.workflows),
      restarts: report.restarts.kill + report.restarts.term,
      redelivered: report.redeliveredKeys,
      footprint: JSON.stringify(report.footprint),
    });
    expect(report.unexpectedErrors).toEqual([]);
    expect(report.violationsDuringRun).toEqual([]);
    expect(report.finalViolations).toEqual([]);
    expect(report.duplicateEffects).toBe(0);
    expect(report.restarts.kill + report.restarts.term).toBeGreaterThanOrEqual(2);
    expect(report.nodes).toBeGreaterThan(200);
    // Flat: connections come back to where they were (pools are bounded, restarts return theirs), memory does
    // not climb. A minute is short: the bounds are loose, the figures are in the report.
    const f = report.footprint;
    expect(f.pgConnections!.end).toBeLessThanOrEqual(f.pgConnections!.warm + 4);
    expect(f.redisClients!.end).toBeLessThanOrEqual(f.redisClients!.warm + 4);
    for (const app of ["api", "scheduler-1", "worker-stable"]) {
      const rss = f[`rssMiB.${app}`]!;
      expect(rss.end, `${app} RSS ${JSON.stringify(rss)}`).toBeLessThan(rss.warm * 1.5);
    }
  }, 240_000);

  // The plateau verdict of `npm run soak -- --retention-days D` (docs/retention.md), on fixed series: the CI soak
  // runs a minute, too short for a retention window to show, so only the arithmetic is checked here.
  it("plateau: the last third's maximum against the middle third's, within the tolerance", () => {
    const report = plateau({
      "nodes.rows": [0, 100, 200, 290, 300, 295, 310, 305, 300],
      "nodes.bytes": [0, 10, 20, 30, 40, 50, 60, 70, 80],
    });
    expect(report.samples).toBe(9);
    expect(report.figures["nodes.rows"]).toEqual({
      first: 0,
      middleMax: 300,
      lastMax: 310,
      end: 300,
      growth: 0.033,
      plateaued: true,
    });
    expect(report.figures["nodes.bytes"]).toMatchObject({ middleMax: 50, lastMax: 80, growth: 0.6, plateaued: false });
    expect(report.plateaued).toBe(false);
    expect(plateau({ "nodes.rows": [0, 100, 200, 290, 300, 295, 310, 305, 300] }).plateaued).toBe(true);
    expect(plateau({ "nodes.rows": [0, 100, 200, 290, 300, 295, 310, 305, 300] }, 0.01).plateaued).toBe(false);
    // Steady growth is +50% on this measure, beyond the default tolerance.
    expect(plateau({ "nodes.rows": [10, 20, 30, 40, 50, 60, 70, 80, 90] }).figures["nodes.rows"]!.growth).toBe(0.5);
    // Too few samples to tell: not called a plateau.
    expect(plateau({ "nodes.rows": [5, 5, 5, 5, 5] }).plateaued).toBe(false);
    expect(plateau({}).plateaued).toBe(false);
  });
});
