import { describe, expect, it } from "vitest";
import { readDashboardSettings } from "./config.js";

describe("readDashboardSettings", () => {
  it("keeps Bull Board read-only unless DASHBOARD_QUEUE_ACTIONS is true, and reads WORKER_STALE_MS", () => {
    expect(readDashboardSettings({})).toMatchObject({ queueActions: false, workerStaleMs: 5_000 });
    expect(readDashboardSettings({ DASHBOARD_QUEUE_ACTIONS: "true", WORKER_STALE_MS: "8000" })).toMatchObject({
      queueActions: true,
      workerStaleMs: 8_000,
    });
  });

  it("names the setting and the value it refuses", () => {
    expect(() => readDashboardSettings({ DASHBOARD_QUEUE_ACTIONS: "sometimes" })).toThrow(
      /DASHBOARD_QUEUE_ACTIONS.*must be one of true, false, 1, 0, yes, no, got "sometimes"/,
    );
    expect(() => readDashboardSettings({ WORKER_STALE_MS: "10" })).toThrow(/WORKER_STALE_MS.*between 500 and 3600000/);
  });
});
