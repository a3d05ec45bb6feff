import { ConfigError } from "@trellis/config";
import { describe, expect, it } from "vitest";
import { readSchedulerSettings } from "./config.js";

describe("readSchedulerSettings: the event relay", () => {
  it("is off while EVENTS_REDIS_STREAM is unset or blank", () => {
    expect(readSchedulerSettings({}).eventRelay).toBeUndefined();
    expect(readSchedulerSettings({ EVENTS_REDIS_STREAM: " " }).eventRelay).toBeUndefined();
  });

  it("relays to the named stream, trimmed to 1,000,000 entries and polling every second by default", () => {
    expect(readSchedulerSettings({ EVENTS_REDIS_STREAM: "trellis-events" }).eventRelay).toEqual({
      streamKey: "trellis-events",
      maxLen: 1_000_000,
      pollMs: 1_000,
    });
    const env = { EVENTS_REDIS_STREAM: "s", EVENTS_REDIS_STREAM_MAXLEN: "5000", EVENTS_RELAY_POLL_MS: "250" };
    expect(readSchedulerSettings(env).eventRelay).toEqual({ streamKey: "s", maxLen: 5_000, pollMs: 250 });
  });

  it("rejects a bad length or poll by name, even while the relay is off", () => {
    expect(() => readSchedulerSettings({ EVENTS_REDIS_STREAM_MAXLEN: "0" })).toThrow(ConfigError);
    expect(() => readSchedulerSettings({ EVENTS_RELAY_POLL_MS: "fast" })).toThrow(
      'EVENTS_RELAY_POLL_MS: must be an integer between 10 and 60000, got "fast"',
    );
  });
});
