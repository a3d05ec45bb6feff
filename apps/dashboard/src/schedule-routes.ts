import { type JsonValue, fromJson, toJson } from "@bufbuild/protobuf";
import { InvalidArgumentError, NotFoundError, assertScheduleId } from "@trellis/core";
import type { StateManager } from "@trellis/db";
import { CreateScheduleRequestSchema, type Schedule, ScheduleSchema } from "@trellis/proto";
import express, { type Request, type Response } from "express";
import type { Logger } from "pino";

/** What the schedule endpoints need from the JSON API's router. */
export interface ScheduleRoutesDeps {
  stateManager: StateManager;
  logger: Logger;
  /** Whether a state-changing request comes from the dashboard's own pages. */
  sameOrigin: (req: Request) => boolean;
  /** Largest JSON body accepted. */
  maxBodyBytes: number;
}

/** A schedule as the Schedules page reads it: the protobuf JSON of the Schedule that ListSchedules answers. */
export function scheduleJson(schedule: Schedule): JsonValue {
  return toJson(ScheduleSchema, schedule);
}

/** A CreateScheduleRequest in protobuf JSON (`{"schedule": {...}}`), decoded: unknown fields name the problem. */
function createScheduleRequestOf(body: unknown): Schedule {
  let request: ReturnType<typeof fromJson<typeof CreateScheduleRequestSchema>>;
  try {
    request = fromJson(CreateScheduleRequestSchema, (body ?? {}) as JsonValue);
  } catch (error) {
    throw new InvalidArgumentError("schedule", (error as Error).message);
  }
  if (request.schedule === undefined) throw new InvalidArgumentError("schedule", "required");
  return request.schedule;
}

function refuseCrossOrigin(deps: ScheduleRoutesDeps, req: Request, res: Response): boolean {
  if (deps.sameOrigin(req)) return false;
  res.status(403).json({ error: { code: "PERMISSION_DENIED", message: "cross-origin request refused" } });
  return true;
}

/**
 * The Schedules page's endpoints, through the same StateManager calls as the api's schedule RPCs:
 * `GET /schedules`, `POST /schedules` (a CreateScheduleRequest), `POST /schedules/:id/pause|resume` and
 * `DELETE /schedules/:id`.
 */
export function addScheduleRoutes(router: express.Router, deps: ScheduleRoutesDeps): void {
  const { stateManager, logger } = deps;

  router.get("/schedules", async (_req, res) => {
    res.json({ schedules: (await stateManager.listSchedules()).map(scheduleJson) });
  });

  router.post("/schedules", express.json({ limit: deps.maxBodyBytes, strict: false }), async (req, res) => {
    if (refuseCrossOrigin(deps, req, res)) return;
    const schedule = await stateManager.createSchedule(createScheduleRequestOf(req.body));
    logger.info(
      { schedule: schedule.id, cron: schedule.cron, timezone: schedule.timezone },
      "schedule created from the dashboard",
    );
    res.json({ schedule: scheduleJson(schedule) });
  });

  router.post("/schedules/:id/:action", async (req, res) => {
    if (refuseCrossOrigin(deps, req, res)) return;
    const id = String(req.params.id);
    const action = String(req.params.action);
    assertScheduleId(id, "id");
    if (action !== "pause" && action !== "resume") {
      throw new InvalidArgumentError("action", `unknown action ${JSON.stringify(action)} (pause, resume)`);
    }
    const schedule = await stateManager.updateSchedule(id, { paused: action === "pause" });
    logger.info({ schedule: id, action }, "schedule changed from the dashboard");
    res.json({ schedule: scheduleJson(schedule) });
  });

  router.delete("/schedules/:id", async (req, res) => {
    if (refuseCrossOrigin(deps, req, res)) return;
    const id = String(req.params.id);
    assertScheduleId(id, "id");
    if (!(await stateManager.deleteSchedule(id))) throw new NotFoundError(`schedule ${JSON.stringify(id)} not found`);
    logger.info({ schedule: id }, "schedule deleted from the dashboard");
    res.json({});
  });
}
