import { InvalidArgumentError } from "./errors.js";
import { validateStorableText } from "./storable.js";
import { codePointLength } from "./text.js";

/** Longest workflow or node name, in characters. */
export const MAX_NAME_LENGTH = 256;

/**
 * Throws InvalidArgumentError when a workflow or node name is longer than {@link MAX_NAME_LENGTH} or holds a NUL
 * character (which PostgreSQL cannot store).
 */
export function validateName(name: string, field = "name"): void {
  if (name.length > MAX_NAME_LENGTH && codePointLength(name) > MAX_NAME_LENGTH) {
    throw new InvalidArgumentError(field, `must be at most ${MAX_NAME_LENGTH} characters`);
  }
  validateStorableText(name, field);
}
