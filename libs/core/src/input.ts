import type { JsonObject } from "@bufbuild/protobuf";
import { ResourceExhaustedError } from "./errors.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
import { validateStorableJson } from "./storable.js";
import { utf8ByteLength } from "./text.js";

/** Size of `input` as UTF-8 JSON (`JSON.stringify`), the measure `maxInputBytes` limits; 0 when unset. */
export function inputByteLength(input: JsonObject | undefined): number {
  return input === undefined ? 0 : utf8ByteLength(JSON.stringify(input));
}

/** Throws ResourceExhaustedError when `input` is larger than `limits.maxInputBytes`. */
export function validateInputSize(
  input: JsonObject | undefined,
  field: string,
  limits: WorkflowLimits = DEFAULT_LIMITS,
): void {
  const bytes = inputByteLength(input);
  if (bytes > limits.maxInputBytes) {
    throw new ResourceExhaustedError(
      field,
      `${bytes} bytes of JSON exceeds the limit of ${limits.maxInputBytes} bytes`,
    );
  }
}

/**
 * Throws unless `input` can be stored as given: InvalidArgumentError for a NUL character, a number that is not
 * finite or nesting deeper than MAX_JSON_DEPTH (checked first, so a hostile nesting is never serialised), then
 * ResourceExhaustedError when larger than `limits.maxInputBytes`.
 */
export function validateInput(
  input: JsonObject | undefined,
  field: string,
  limits: WorkflowLimits = DEFAULT_LIMITS,
): void {
  validateStorableJson(input, field);
  validateInputSize(input, field, limits);
}
