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

  it("takes a number of days, decimals allowed; 0 or off turns retention off", () => {
    expect(readRetentionSettings({ RETENTION_DAYS: "90", RETENTION_BATCH_SIZE: "100" })).toEqual({
      days: 90,
      intervalMs: 60_000,
      batchSize: 100,
    });
    // 0.0005 days is 43.2 s: a soak of minutes shows retention at work.
    expect(readRetentionSettings({ RETENTION_DAYS: "0.0005", RETENTION_INTERVAL_MS: "1000" })).toEqual({
      days: 0.0005,
      intervalMs: 1_000,
      batchSize: 500,
    });
    expect(readRetentionSettings({ RETENTION_DAYS: "1.5" })?.days).toBe(1.5);
    expect(readRetentionSettings({ RETENTION_DAYS: ".25" })?.days).toBe(0.25);
    expect(readRetentionSettings({ RETENTION_DAYS: "+7" })?.days).toBe(7);
    expect(readRetentionSettings({ RETENTION_DAYS: "36500" })?.days).toBe(36_500);
    expect(readRetentionSettings({ RETENTION_DAYS: "0" })).toBeUndefined();
    expect(readRetentionSettings({ RETENTION_DAYS: "0.0" })).toBeUndefined();
    expect(readRetentionSettings({ RETENTION_DAYS: "off" })).toBeUndefined();
    expect(readRetentionSettings({ RETENTION_DAYS: "OFF" })).toBeUndefined();
    expect(readSchedulerSettings({ RETENTION_DAYS: "off" }).retention).toBeUndefined();
  });

  it("refuses anything else with one line naming the setting, the reason and the value", () => {
    for (const bad of ["-1", "-0.5", "30d", "never", "NaN", "Infinity", "1e3", "1.2.3", ".", "36501", "0.00001"]) {
      expect(() => readRetentionSettings({ RETENTION_DAYS: bad }), bad).toThrow(ConfigError);
    }
    for (const garbage of ["30d", "NaN", "1e3"]) {
      expect(() => readRetentionSettings({ RETENTION_DAYS: garbage })).toThrow(
        `RETENTION_DAYS: must be a number of days (decimals allowed, e.g. 30 or 0.5), or 0 or "off" to keep finished workflows forever, got ${JSON.stringify(garbage)}`,
      );
    }
    expect(() => readRetentionSettings({ RETENTION_DAYS: "-1" })).toThrow(
      'RETENTION_DAYS: must not be negative (0 or "off" keeps finished workflows forever), got "-1"',
    );
    expect(() => readRetentionSettings({ RETENTION_DAYS: "36501" })).toThrow(
      'RETENTION_DAYS: must be at most 36500 days, got "36501"',
    );
    expect(() => readRetentionSettings({ RETENTION_DAYS: "0.00001" })).toThrow(
      'RETENTION_DAYS: must be at least one second (0.0000116 days), or 0 or "off" to keep finished workflows forever, got "0.00001"',
    );
    expect(() => readRetentionSettings({ RETENTION_DAYS: "off", RETENTION_BATCH_SIZE: "0" })).toThrow(
      /RETENTION_BATCH_SIZE: must be an integer between 1 and 10000, got "0"/,
    );
    expect(() => readRetentionSettings({ RETENTION_INTERVAL_MS: "10" })).toThrow(/RETENTION_INTERVAL_MS/);
  });
});
