import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  InvalidArgumentError,
  NotFoundError,
  assertScheduleId,
  quoteForMessage,
  scheduleTimeZone,
  validateCron,
  validateScheduleSpec,
  validateScheduledWorkflow,
} from "@trellis/core";
import type { StateManager, UpdateScheduleInput } from "@trellis/db";
import type {
  CreateScheduleRequest,
  CreateScheduleResponseSchema,
  DeleteScheduleRequest,
  DeleteScheduleResponseSchema,
  ListSchedulesRequest,
  ListSchedulesResponseSchema,
  UpdateScheduleRequest,
  UpdateScheduleResponseSchema,
} from "@trellis/proto";

/** The schedule RPCs of WorkflowService as plain functions: request checks -> StateManager -> response. */
export interface ScheduleServiceMethods {
  createSchedule(request: CreateScheduleRequest): Promise<MessageInitShape<typeof CreateScheduleResponseSchema>>;
  listSchedules(request: ListSchedulesRequest): Promise<MessageInitShape<typeof ListSchedulesResponseSchema>>;
  updateSchedule(request: UpdateScheduleRequest): Promise<MessageInitShape<typeof UpdateScheduleResponseSchema>>;
  deleteSchedule(request: DeleteScheduleRequest): Promise<MessageInitShape<typeof DeleteScheduleResponseSchema>>;
}

/** The fields UpdateSchedule's update_mask may name. */
const UPDATABLE = ["cron", "timezone", "workflow", "paused"] as const;

/**
 * The changes an UpdateSchedule request asks for, checked: `update_mask` names any of cron, timezone, workflow and
 * paused (at least one, none twice). A cron given without a time zone is checked in UTC here; the StateManager checks
 * it again in the schedule's own zone.
 */
export function scheduleUpdateOf(request: UpdateScheduleRequest): { id: string; update: UpdateScheduleInput } {
  const schedule = request.schedule;
  if (schedule === undefined) throw new InvalidArgumentError("schedule", "required");
  assertScheduleId(schedule.id, "schedule.id");
  const paths = request.updateMask?.paths ?? [];
  if (paths.length === 0) {
    throw new InvalidArgumentError("update_mask", `required (paths: ${UPDATABLE.join(", ")})`);
  }
  const update: UpdateScheduleInput = {};
  const seen = new Set<string>();
  paths.forEach((path, i) => {
    const field = `update_mask.paths[${i}]`;
    if (seen.has(path)) throw new InvalidArgumentError(field, `duplicate path ${quoteForMessage(path)}`);
    seen.add(path);
    switch (path) {
      case "cron":
        update.cron = schedule.cron;
        break;
      case "timezone":
        update.timezone = scheduleTimeZone(schedule.timezone, "schedule.timezone");
        break;
      case "workflow":
        validateScheduledWorkflow(schedule.id, schedule.workflow, "schedule.workflow");
        update.workflow = schedule.workflow;
        break;
      case "paused":
        update.paused = schedule.paused;
        break;
      default:
        throw new InvalidArgumentError(
          field,
          `${quoteForMessage(path)} cannot be updated (allowed: ${UPDATABLE.join(", ")})`,
        );
    }
  });
  if (update.cron !== undefined) validateCron(update.cron, update.timezone ?? "UTC", "schedule.cron");
  return { id: schedule.id, update };
}

/** The schedule RPCs over a StateManager; they throw TrellisErrors for the caller's mistakes. */
export function scheduleServiceMethods(stateManager: StateManager): ScheduleServiceMethods {
  return {
    async createSchedule(request) {
      if (request.schedule === undefined) throw new InvalidArgumentError("schedule", "required");
      // Checked here with the default limits (nothing stored on a refusal); the StateManager checks again with its own.
      validateScheduleSpec(request.schedule, "schedule");
      return { schedule: await stateManager.createSchedule(request.schedule) };
    },

    async listSchedules() {
      return { schedules: await stateManager.listSchedules() };
    },

    async updateSchedule(request) {
      const { id, update } = scheduleUpdateOf(request);
      return { schedule: await stateManager.updateSchedule(id, update) };
    },

    async deleteSchedule(request) {
      assertScheduleId(request.id, "id");
      if (!(await stateManager.deleteSchedule(request.id))) {
        throw new NotFoundError(`schedule ${quoteForMessage(request.id)} not found`);
      }
      return {};
    },
  };
}
