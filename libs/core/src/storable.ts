import type { JsonValue } from "@bufbuild/protobuf";
import type { Value } from "@bufbuild/protobuf/wkt";
import { InvalidArgumentError } from "./errors.js";

/** Deepest nesting of objects and lists accepted in an input (node or workflow), and in a node's output. */
export const MAX_JSON_DEPTH = 100;

/** Why PostgreSQL cannot store `text` (a NUL character: neither `text` nor `jsonb` can hold one), or undefined. */
export function textProblem(text: string): string | undefined {
  return text.includes("\u0000") ? "must not contain the NUL character (U+0000)" : undefined;
}

/** Throws InvalidArgumentError on `field` when `text` cannot be stored (see {@link textProblem}). */
export function validateStorableText(text: string, field: string): void {
  const problem = textProblem(text);
  if (problem) throw new InvalidArgumentError(field, problem);
}

/** Where a JSON value cannot be stored and why: `path` is relative (`.a[2].b`). */
export interface JsonProblem {
  path: string;
  reason: string;
}

function keyPath(key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/**
 * The first thing in a JSON value that PostgreSQL's jsonb cannot store as given: a NUL character in a string or a
 * key, a number that is not finite (JSON has no NaN or Infinity), or nesting deeper than {@link MAX_JSON_DEPTH}.
 * Iterative, so a hostile nesting cannot overflow the stack.
 */
export function jsonProblem(value: JsonValue | undefined, maxDepth = MAX_JSON_DEPTH): JsonProblem | undefined {
  const stack: { value: unknown; path: string; depth: number }[] = [{ value, path: "", depth: 0 }];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { value: v, path, depth } = item;
    if (typeof v === "string") {
      const problem = textProblem(v);
      if (problem) return { path, reason: problem };
    } else if (typeof v === "number") {
      if (!Number.isFinite(v)) return { path, reason: `${v} is not a JSON number` };
    } else if (Array.isArray(v)) {
      if (depth >= maxDepth) return { path, reason: `nests deeper than ${maxDepth} levels` };
      for (let i = v.length - 1; i >= 0; i--) stack.push({ value: v[i], path: `${path}[${i}]`, depth: depth + 1 });
    } else if (v !== null && typeof v === "object") {
      if (depth >= maxDepth) return { path, reason: `nests deeper than ${maxDepth} levels` };
      for (const [key, inner] of Object.entries(v)) {
        const problem = textProblem(key);
        if (problem) return { path: `${path}${keyPath(key)}`, reason: `key ${problem}` };
        stack.push({ value: inner, path: `${path}${keyPath(key)}`, depth: depth + 1 });
      }
    }
  }
  return undefined;
}

/** Throws InvalidArgumentError (`<field><path>: <reason>`) when `input` cannot be stored (see {@link jsonProblem}). */
export function validateStorableJson(input: JsonValue | undefined, field: string): void {
  const problem = jsonProblem(input);
  if (problem) throw new InvalidArgumentError(`${field}${problem.path}`, problem.reason);
}

/**
 * The same as {@link jsonProblem} for a `google.protobuf.Value` message (a NodeService's output), without converting
 * it first: its conversion to JSON is what would fail (NaN) or overflow the stack (nesting).
 */
export function valueProblem(value: Value | undefined, maxDepth = MAX_JSON_DEPTH): JsonProblem | undefined {
  const stack: { value: Value; path: string; depth: number }[] = value ? [{ value, path: "", depth: 0 }] : [];
  for (let item = stack.pop(); item !== undefined; item = stack.pop()) {
    const { value: v, path, depth } = item;
    const kind = v.kind;
    switch (kind.case) {
      case "stringValue": {
        const problem = textProblem(kind.value);
        if (problem) return { path, reason: problem };
        break;
      }
      case "numberValue":
        if (!Number.isFinite(kind.value)) return { path, reason: `${kind.value} is not a JSON number` };
        break;
      case "listValue":
        if (depth >= maxDepth) return { path, reason: `nests deeper than ${maxDepth} levels` };
        kind.value.values.forEach((inner, i) => {
          stack.push({ value: inner, path: `${path}[${i}]`, depth: depth + 1 });
        });
        break;
      case "structValue":
        if (depth >= maxDepth) return { path, reason: `nests deeper than ${maxDepth} levels` };
        for (const [key, inner] of Object.entries(kind.value.fields)) {
          const problem = textProblem(key);
          if (problem) return { path: `${path}${keyPath(key)}`, reason: `key ${problem}` };
          stack.push({ value: inner, path: `${path}${keyPath(key)}`, depth: depth + 1 });
        }
        break;
      case "nullValue":
      case "boolValue":
      case undefined:
        break;
      default: {
        const never: never = kind;
        throw new Error(`unknown google.protobuf.Value kind ${JSON.stringify(never)}`);
      }
    }
  }
  return undefined;
}
