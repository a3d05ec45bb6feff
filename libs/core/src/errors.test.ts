import { describe, expect, it } from "vitest";
import {
  AbortedError,
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  ResourceExhaustedError,
  TrellisError,
  UnauthenticatedError,
} from "./errors.js";

describe("typed errors", () => {
  it("InvalidArgumentError names the field and the reason in its message", () => {
    const err = new InvalidArgumentError("nodes[3].id", "required");
    expect(err.message).toBe("nodes[3].id: required");
    expect(err.field).toBe("nodes[3].id");
    expect(err.reason).toBe("required");
    expect(err.code).toBe("INVALID_ARGUMENT");
    expect(err.name).toBe("InvalidArgumentError");
  });

  it("InvalidArgumentError with an empty field uses the reason alone as its message", () => {
    expect(new InvalidArgumentError("", "bad request").message).toBe("bad request");
  });

  it("ResourceExhaustedError formats its message like InvalidArgumentError", () => {
    const err = new ResourceExhaustedError("nodes", "too many");
    expect(err.message).toBe("nodes: too many");
    expect(err.code).toBe("RESOURCE_EXHAUSTED");
    expect(err.name).toBe("ResourceExhaustedError");
    expect(new ResourceExhaustedError("", "too many").message).toBe("too many");
  });

  it.each([
    [NotFoundError, "NOT_FOUND", "NotFoundError"],
    [FailedPreconditionError, "FAILED_PRECONDITION", "FailedPreconditionError"],
    [AlreadyExistsError, "ALREADY_EXISTS", "AlreadyExistsError"],
    [UnauthenticatedError, "UNAUTHENTICATED", "UnauthenticatedError"],
    [AbortedError, "ABORTED", "AbortedError"],
  ] as const)("%o carries code %s, its class name and the given message", (ErrorClass, code, name) => {
    const err = new ErrorClass("something happened");
    expect(err.code).toBe(code);
    expect(err.name).toBe(name);
    expect(err.message).toBe("something happened");
    expect(err).toBeInstanceOf(TrellisError);
    expect(err).toBeInstanceOf(Error);
  });

  it("every error class is a TrellisError so one place can map them to gRPC codes", () => {
    expect(new InvalidArgumentError("f", "r")).toBeInstanceOf(TrellisError);
    expect(new ResourceExhaustedError("f", "r")).toBeInstanceOf(TrellisError);
  });
});
