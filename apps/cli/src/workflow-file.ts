import { readFileSync } from "node:fs";
import { basename, extname } from "node:path";
import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { type CreateWorkflowRequest, CreateWorkflowRequestSchema } from "@trellis/proto";
import { parseDocument } from "yaml";
import { parseJsonText } from "./json-text.js";

/** A workflow file that cannot be read or is not a CreateWorkflowRequest; the message names the file and why. */
export class WorkflowFileError extends Error {
  override readonly name = "WorkflowFileError";
}

/** The path `run -` reads from: standard input. */
export const STDIN_PATH = "-";

/** How standard input is named in messages, and the name of an unnamed workflow read from it. */
const STDIN_NAME = "stdin";

/**
 * Parses the text of a workflow file: JSON for `.json`, YAML for anything else (YAML 1.2 reads JSON too). The
 * document is a `CreateWorkflowRequest` in protobuf JSON form (`parentIds` or `parent_ids`, durations as `"1.5s"`).
 * A workflow without a name is named after the file. A syntax error is reported with the parser's whole message and
 * where it is: `file:line:column`, and the line with a caret under the column.
 */
export function parseWorkflowFile(path: string, text: string): CreateWorkflowRequest {
  const shown = path === STDIN_PATH ? STDIN_NAME : path;
  const extension = extname(path).toLowerCase();
  const document = extension === ".json" ? parseJson(shown, text) : parseYaml(shown, text);
  if (typeof document !== "object" || document === null || Array.isArray(document)) {
    throw new WorkflowFileError(`${shown}: expected an object with "name" and "nodes", got ${describe(document)}`);
  }
  let request: CreateWorkflowRequest;
  try {
    request = fromJson(CreateWorkflowRequestSchema, document as JsonValue);
  } catch (error) {
    throw new WorkflowFileError(`${shown}: not a CreateWorkflowRequest: ${messageOf(error)}`);
  }
  if (request.name === "") request.name = path === STDIN_PATH ? STDIN_NAME : basename(path, extname(path));
  return request;
}

function parseJson(path: string, text: string): unknown {
  const parsed = parseJsonText(text);
  if (parsed.ok) return parsed.value;
  const where = parsed.line === undefined ? "" : ` at line ${parsed.line}, column ${parsed.column}`;
  const excerpt = parsed.excerpt === undefined ? "" : `:\n\n${parsed.excerpt}`;
  throw new WorkflowFileError(`${path}: not valid JSON: ${parsed.message}${where}${excerpt}`);
}

function parseYaml(path: string, text: string): unknown {
  const document = parseDocument(text);
  const [first, ...more] = document.errors;
  if (first !== undefined) {
    // The message is YAML's own: what is wrong, "at line L, column C:", and the lines around it with a caret.
    const others =
      more.length === 0 ? "" : `\n(${more.length} more error${more.length === 1 ? "" : "s"} after this one)`;
    throw new WorkflowFileError(`${path}: not valid YAML: ${first.message.trimEnd()}${others}`);
  }
  try {
    return document.toJS();
  } catch (error) {
    throw new WorkflowFileError(`${path}: not valid YAML: ${messageOf(error)}`);
  }
}

/**
 * Reads and parses a workflow file (see {@link parseWorkflowFile}); `-` reads standard input (through `readStdin`).
 */
export function readWorkflowFile(
  path: string,
  readStdin: () => string = () => readFileSync(0, "utf8"),
): CreateWorkflowRequest {
  let text: string;
  try {
    text = path === STDIN_PATH ? readStdin() : readFileSync(path, "utf8");
  } catch (error) {
    const shown = path === STDIN_PATH ? STDIN_NAME : path;
    const code = (error as NodeJS.ErrnoException).code;
    throw new WorkflowFileError(
      code === "ENOENT" ? `${shown}: no such file` : `${shown}: cannot read: ${messageOf(error)}`,
    );
  }
  return parseWorkflowFile(path, text);
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).trimEnd();
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  return `a ${typeof value}`;
}
