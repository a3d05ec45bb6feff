import { readFileSync } from "node:fs";
import { basename, extname } from "node:path";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { type CreateWorkflowRequest, CreateWorkflowRequestSchema } from "@trellis/proto";
import { parse as parseYaml } from "yaml";

/** A workflow file that cannot be read or is not a CreateWorkflowRequest; the message names the file and why. */
export class WorkflowFileError extends Error {
  override readonly name = "WorkflowFileError";
}

/**
 * Parses the text of a workflow file: JSON for `.json`, YAML for anything else (YAML 1.2 reads JSON too). The
 * document is a `CreateWorkflowRequest` in protobuf JSON form (`parentIds` or `parent_ids`, durations as `"1.5s"`).
 * A workflow without a name is named after the file.
 */
export function parseWorkflowFile(path: string, text: string): CreateWorkflowRequest {
  const extension = extname(path).toLowerCase();
  let document: unknown;
  try {
    document = extension === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    throw new WorkflowFileError(`${path}: not valid ${extension === ".json" ? "JSON" : "YAML"}: ${firstLine(error)}`);
  }
  if (typeof document !== "object" || document === null || Array.isArray(document)) {
    throw new WorkflowFileError(`${path}: expected an object with "name" and "nodes", got ${describe(document)}`);
  }
  let request: CreateWorkflowRequest;
  try {
    request = fromJson(CreateWorkflowRequestSchema, document as JsonValue);
  } catch (error) {
    throw new WorkflowFileError(`${path}: not a CreateWorkflowRequest: ${firstLine(error)}`);
  }
  if (request.name === "") request.name = basename(path, extname(path));
  return request;
}

/** Reads and parses a workflow file (see {@link parseWorkflowFile}). */
export function readWorkflowFile(path: string): CreateWorkflowRequest {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new WorkflowFileError(
      code === "ENOENT" ? `${path}: no such file` : `${path}: cannot read: ${firstLine(error)}`,
    );
  }
  return parseWorkflowFile(path, text);
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "";
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return `a ${typeof value}`;
}
