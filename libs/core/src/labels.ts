import { InvalidArgumentError } from "./errors.js";
import { DEFAULT_LIMITS, type WorkflowLimits } from "./limits.js";
import { validateStorableText } from "./storable.js";
import { codePointLength, quoteForMessage } from "./text.js";

/** What a label key may look like: 1 to 63 characters, starting with a letter or digit. */
export const LABEL_KEY_PATTERN = /^[A-Za-z0-9]([A-Za-z0-9._/-]{0,62})$/;

/** Longest label value, in characters. */
export const MAX_LABEL_VALUE_LENGTH = 256;

/**
 * Throws InvalidArgumentError when `labels` has too many entries (field `field`), a malformed key
 * (field `field`) or a too-long value or one holding a NUL character (field `field["key"]`).
 */
export function validateLabels(
  labels: Readonly<Record<string, string>>,
  field: string,
  limits: WorkflowLimits = DEFAULT_LIMITS,
): void {
  const keys = Object.keys(labels);
  if (keys.length > limits.maxLabels) {
    throw new InvalidArgumentError(field, `at most ${limits.maxLabels} labels are allowed, got ${keys.length}`);
  }
  for (const key of keys) {
    if (!LABEL_KEY_PATTERN.test(key)) {
      throw new InvalidArgumentError(
        field,
        `label key ${quoteForMessage(key)} must match [A-Za-z0-9][A-Za-z0-9._/-]{0,62}`,
      );
    }
    const value = labels[key] ?? "";
    if (value.length > MAX_LABEL_VALUE_LENGTH && codePointLength(value) > MAX_LABEL_VALUE_LENGTH) {
      throw new InvalidArgumentError(
        `${field}[${JSON.stringify(key)}]`,
        `must be at most ${MAX_LABEL_VALUE_LENGTH} characters`,
      );
    }
    validateStorableText(value, `${field}[${JSON.stringify(key)}]`);
  }
}
