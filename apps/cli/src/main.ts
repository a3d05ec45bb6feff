// `trellis` command: wires the command line -> api connection -> command -> exit code.
import { status as grpcStatus } from "@grpc/grpc-js";
import { type CliArgs, UsageError, commandName, parseCliArgs } from "./args.js";
import { connect } from "./client.js";
import { runCommand } from "./commands.js";
import { grpcCode } from "./follow.js";
import { processOutput } from "./output.js";
import { WorkflowFileError } from "./workflow-file.js";

const output = processOutput();

let args: CliArgs;
try {
  args = parseCliArgs(process.argv.slice(2), process.env);
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  const help =
    error.command === ""
      ? "`trellis --help` shows the commands"
      : `\`trellis ${error.command} --help\` shows its options`;
  output.error(`trellis: ${error.message} (${help})`);
  process.exit(2);
}

const { command } = args;
const name = commandName(command);
const api = connect(args.addr, args.token);
const controller = new AbortController();
let interrupted = false;
process.once("SIGINT", () => {
  interrupted = true;
  controller.abort(new Error("interrupted"));
});

/** One line for a failed command. */
function explain(error: unknown): string {
  const code = grpcCode(error);
  if (code !== undefined) {
    const details = (error as { details?: string }).details ?? "";
    const hint =
      code === grpcStatus.UNAVAILABLE
        ? ` (is the Trellis api running at ${args.addr}? --addr or TRELLIS_ADDR sets where)`
        : code === grpcStatus.UNAUTHENTICATED
          ? " (--token or TRELLIS_TOKEN sets the token)"
          : "";
    return `${grpcStatus[code] ?? code}: ${details}${hint}`;
  }
  return error instanceof Error ? error.message : String(error);
}

try {
  process.exitCode = await runCommand(command, {
    api,
    output,
    signal: controller.signal,
    dashboardUrl: args.dashboardUrl,
  });
} catch (error) {
  if (interrupted) {
    output.error(
      command.kind === "watch"
        ? `trellis: stopped watching; the workflow keeps running (\`trellis watch ${command.workflowId}\` follows it again)`
        : command.kind === "run" && command.watch
          ? "trellis: stopped watching; the workflow keeps running (`trellis watch ID` follows it again)"
          : "trellis: interrupted",
    );
    process.exitCode = 130;
  } else {
    output.error(`trellis ${name}: ${error instanceof WorkflowFileError ? error.message : explain(error)}`);
    process.exitCode = 1;
  }
} finally {
  api.close();
}
