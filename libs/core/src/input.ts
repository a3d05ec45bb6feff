import type { JsonObject } from "@bufbuild/protobuf";
import { ResourceExhaustedError } from "./errors.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
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
