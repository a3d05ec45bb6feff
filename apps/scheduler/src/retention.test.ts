import { ConfigError } from "@trellis/config";
import { describe, expect, it } from "vitest";
import { readSchedulerSettings } from "./config.js";
import { DEFAULT_RETENTION_DAYS, readRetentionSettings } from "./retention.js";

describe("RETENTION_DAYS", () => {
  it("defaults to 30 days, in batches of 500 every minute", () => {
    expect(DEFAULT_RETENTION_DAYS).toBe(30);
    expect(readRetentionSettings({})).toEqual({ days: 30, intervalMs: 60_000, batchSize: 500 });
    expect(readSchedulerSettings({}).retention).toEqual({ days: 30, intervalMs: 60_000, batchSize: 500 });
    expect(readRetentionSettings({ RETENTION_DAYS: " " })?.days).toBe(30);
  });

  it("takes a whole number of days; 0 or off turns retention off", () => {
    expect(readRetentionSettings({ RETENTION_DAYS: "90", RETENTION_BATCH_SIZE: "100" })).toEqual({
      days: 90,
      intervalMs: 60_000,
      batchSize: 100,
    });
    expect(readRetentionSettings({ RETENTION_DAYS: "0" })).toBeUndefined();
    expect(readRetentionSettings({ RETENTION_DAYS: "off" })).toBeUndefined();
    expect(readRetentionSettings({ RETENTION_DAYS: "OFF" })).toBeUndefined();
    expect(readSchedulerSettings({ RETENTION_DAYS: "off" }).retention).toBeUndefined();
  });

  it("refuses anything else with one line naming the setting and the value", () => {
    for (const bad of ["-1", "1.5", "30d", "never", "36501"]) {
      expect(() => readRetentionSettings({ RETENTION_DAYS: bad })).toThrow(ConfigError);
    }
    expect(() => readRetentionSettings({ RETENTION_DAYS: "30d" })).toThrow(
      'RETENTION_DAYS: must be a whole number of days between 1 and 36500, or 0 or "off" to keep finished workflows forever, got "30d"',
    );
    expect(() => readRetentionSettings({ RETENTION_DAYS: "off", RETENTION_BATCH_SIZE: "0" })).toThrow(
      /RETENTION_BATCH_SIZE: must be an integer between 1 and 10000, got "0"/,
    );
    expect(() => readRetentionSettings({ RETENTION_INTERVAL_MS: "10" })).toThrow(/RETENTION_INTERVAL_MS/);
  });
});
