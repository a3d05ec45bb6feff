import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "@trellis/core";
import { describe, expect, it } from "vitest";
import { errorAnswer } from "./http-errors.js";

describe("errorAnswer", () => {
  it("maps typed errors to 400, 404 and 409 with their code and message", () => {
    expect(errorAnswer(new InvalidArgumentError("status", "unknown"))).toEqual({
      status: 400,
      body: { error: { code: "INVALID_ARGUMENT", message: "status: unknown" } },
    });
    expect(errorAnswer(new NotFoundError("workflow x not found")).status).toBe(404);
    expect(errorAnswer(new FailedPreconditionError("already finished")).status).toBe(409);
  });

  it("hides the message of an unexpected error behind a 500", () => {
    expect(errorAnswer(new Error("connection string with password"))).toEqual({
      status: 500,
      body: { error: { code: "INTERNAL", message: "internal error" } },
    });
  });
});
