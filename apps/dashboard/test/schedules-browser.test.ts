// The Schedules page in real headless Chromium (Debian's `chromium` driven by playwright-core).
import { create } from "@bufbuild/protobuf";
import { CreateWorkflowRequestSchema, ScheduleSchema } from "@trellis/proto";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { artifact, launchChromium, skipWithoutChromium } from "./chromium.js";
import { type DashboardFixture, startDashboard } from "./fixture.js";

const skip = skipWithoutChromium("Schedules page browser test");

describe.skipIf(skip)("the Schedules page in headless Chromium", () => {
  let f: DashboardFixture;
  let browser: Browser;

  beforeAll(async () => {
    f = await startDashboard("dashsched_ui");
    browser = await launchChromium();
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
      await page.screenshot({ path: artifact("dashboard-schedules.png"), animations: "disabled" });

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
