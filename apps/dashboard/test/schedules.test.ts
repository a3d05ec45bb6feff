import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DashboardFixture, startDashboard } from "./fixture.js";

let f: DashboardFixture;

beforeAll(async () => {
  f = await startDashboard("dashsched");
});

afterAll(async () => {
  await f?.close();
});

interface ScheduleJson {
  id: string;
  cron: string;
  timezone: string;
  paused?: boolean;
  nextRunAt?: string;
  lastWorkflowId?: string;
  workflow?: { name?: string };
}
interface Body {
  schedules: ScheduleJson[];
  schedule: ScheduleJson;
  error: { code: string; message: string };
}

async function send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${f.baseUrl}${path}`, {
    method,
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as Body };
}

const NIGHTLY = {
  id: "nightly",
  cron: "0 7 * * *",
  timezone: "Europe/Paris",
  workflow: { name: "nightly report", nodes: [{ id: "fetch", capability: "echo" }] },
};

describe("/api/schedules", () => {
  it("creates a schedule from a CreateScheduleRequest, lists it, pauses, resumes and deletes it", async () => {
    const created = await send("POST", "/api/schedules", { schedule: NIGHTLY });
    expect(created.status).toBe(200);
    expect(created.body.schedule).toMatchObject({ id: "nightly", cron: "0 7 * * *", timezone: "Europe/Paris" });
    expect(Date.parse(created.body.schedule.nextRunAt!)).toBeGreaterThan(Date.now());

    const listed = await send("GET", "/api/schedules");
    expect(listed.body.schedules.map((s) => s.id)).toEqual(["nightly"]);
    expect(listed.body.schedules[0]!.workflow?.name).toBe("nightly report");

    const paused = await send("POST", "/api/schedules/nightly/pause");
    expect(paused.body.schedule).toMatchObject({ paused: true });
    expect(paused.body.schedule.nextRunAt).toBeUndefined();
    const resumed = await send("POST", "/api/schedules/nightly/resume");
    expect(resumed.body.schedule.paused).toBeUndefined();
    expect(resumed.body.schedule.nextRunAt).toBeDefined();

    expect((await send("DELETE", "/api/schedules/nightly")).status).toBe(200);
    const gone = await send("DELETE", "/api/schedules/nightly");
    expect([gone.status, gone.body.error.code]).toEqual([404, "NOT_FOUND"]);
  });

  it("answers 400 naming the field for bad input, 409 for a duplicate id, 403 across origins", async () => {
    const cases: [unknown, string][] = [
      [{ schedule: { ...NIGHTLY, cron: "0 0 7 * * *" } }, "schedule.cron"],
      [{ schedule: { ...NIGHTLY, timezone: "Mars/Olympus" } }, "schedule.timezone"],
      [{ schedule: { ...NIGHTLY, workflow: { nodes: [{ id: "a" }] } } }, "schedule.workflow.nodes[0].capability"],
      [{ schedule: { ...NIGHTLY, bogus: 1 } }, "schedule"],
      [{}, "schedule: required"],
    ];
    for (const [body, field] of cases) {
      const { status, body: answer } = await send("POST", "/api/schedules", body);
      expect(status, JSON.stringify(body)).toBe(400);
      expect(answer.error.message).toContain(field);
    }
    expect((await send("GET", "/api/schedules")).body.schedules).toEqual([]);
    await send("POST", "/api/schedules", { schedule: NIGHTLY });
    const duplicate = await send("POST", "/api/schedules", { schedule: NIGHTLY });
    expect([duplicate.status, duplicate.body.error.code]).toEqual([409, "ALREADY_EXISTS"]);
    const crossSite = await send("POST", "/api/schedules/nightly/pause", undefined, { origin: "https://evil.example" });
    expect(crossSite.status).toBe(403);
    const unknownAction = await send("POST", "/api/schedules/nightly/stop");
    expect(unknownAction.status).toBe(400);
    await send("DELETE", "/api/schedules/nightly");
  });

  it("serves the Schedules page, linked from the other pages", async () => {
    const page = await fetch(`${f.baseUrl}/schedules`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('<script type="module" src="/assets/js/schedules-page.js">');
    for (const path of ["/", "/limits"]) {
      expect(await (await fetch(`${f.baseUrl}${path}`)).text()).toContain('href="/schedules"');
    }
    expect((await fetch(`${f.baseUrl}/assets/js/schedules-page.js`)).status).toBe(200);
  });
});
