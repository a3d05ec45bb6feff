// The Schedules page in real headless Chromium (Debian's `chromium` driven by playwright-core).
import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { create } from "@bufbuild/protobuf";
import { CreateWorkflowRequestSchema, ScheduleSchema } from "@trellis/proto";
import { type Browser, type Page, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DashboardFixture, startDashboard } from "./fixture.js";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// In CI the browser tests must run (.ci/run installs chromium); elsewhere a missing browser skips them loudly.
const skip = !existsSync(CHROMIUM) && !process.env.CI;
if (skip) console.warn(`Schedules page browser test SKIPPED: ${CHROMIUM} is missing (apt-get install -y chromium)`);

describe.skipIf(skip)("the Schedules page in headless Chromium", () => {
  let f: DashboardFixture;
  let browser: Browser;

  beforeAll(async () => {
    f = await startDashboard("dashsched_ui");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
  });

  afterAll(async () => {
    await browser?.close();
    await f?.close();
  });

  it("lists schedules, creates one from the form, pauses, resumes and deletes it, with no page error", async () => {
    await f.stateManager.createSchedule(
      create(ScheduleSchema, {
        id: "weekday-standup",
        cron: "30 9 * * MON-FRI",
        timezone: "America/New_York",
        workflow: create(CreateWorkflowRequestSchema, {
          name: "standup notes",
          nodes: [{ id: "notes", capability: "llm.mock" }],
        }),
      }),
    );
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page: Page = await context.newPage();
    page.setDefaultTimeout(15_000);
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console: ${message.text()}`);
    });
    try {
      await page.goto(`${f.baseUrl}/schedules`);
      await page.locator("body[data-ready=true]").waitFor();
      const standup = page.locator('tr[data-id="weekday-standup"]');
      expect(await standup.locator('[data-field="cron"]').textContent()).toBe("30 9 * * MON-FRI");
      expect(await standup.locator('[data-field="timezone"]').textContent()).toBe("America/New_York");

      await page.fill('#schedule-form input[name="id"]', "nightly-digest");
      await page.fill('#schedule-form input[name="cron"]', "0 7 * * *");
      await page.fill('#schedule-form input[name="timezone"]', "Europe/Paris");
      await page.click("#schedule-save");
      const nightly = page.locator('tr[data-id="nightly-digest"]');
      await nightly.waitFor();
      expect(await nightly.locator('[data-field="next"]').textContent()).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d:00/);
      const path = fileURLToPath(new URL("../../../test-artifacts/dashboard-schedules.png", import.meta.url));
      mkdirSync(dirname(path), { recursive: true });
      await page.screenshot({ path, animations: "disabled" });

      await nightly.locator('[data-action="pause"]').click();
      await nightly.locator('[data-field="next"]', { hasText: "paused" }).waitFor();
      expect((await f.stateManager.listSchedules()).find((s) => s.id === "nightly-digest")?.paused).toBe(true);
      await nightly.locator('[data-action="resume"]').click();
      await nightly.locator('[data-action="pause"]').waitFor();

      await nightly.locator('[data-action="delete"]').click();
      await page.locator("dialog#confirm[open]").waitFor();
      await page.click("#confirm-yes");
      await nightly.waitFor({ state: "detached" });
      expect((await f.stateManager.listSchedules()).map((s) => s.id)).toEqual(["weekday-standup"]);

      // A refused create says why and changes nothing.
      await page.fill('#schedule-form input[name="id"]', "bad");
      await page.fill('#schedule-form input[name="cron"]', "0 0 7 * * *");
      await page.click("#schedule-save");
      await page.getByText("schedule.cron:").first().waitFor();
      expect((await f.stateManager.listSchedules()).map((s) => s.id)).toEqual(["weekday-standup"]);
    } finally {
      await context.close();
    }
    // The refused create answers 400, which Chromium logs as a failed resource load: anything else is a problem.
    expect(problems.filter((p) => !p.includes("400"))).toEqual([]);
  }, 60_000);
});
