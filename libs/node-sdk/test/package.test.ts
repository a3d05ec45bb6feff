import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT } from "@trellis/testing";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const SDK_DIR = join(REPO_ROOT, "libs/node-sdk");
// Under the repository so the installed package finds its dependencies (@grpc/grpc-js, @bufbuild/protobuf,
// grpc-health-check) in the repository's node_modules, as an application's would be in its own.
mkdirSync(join(REPO_ROOT, ".scratch"), { recursive: true });
const workDir = mkdtempSync(join(REPO_ROOT, ".scratch", "node-sdk-pack-"));

afterAll(() => rmSync(workDir, { recursive: true, force: true }));

/** What an application does with the package: serve a capability, then call it through gRPC. */
const CONSUMER = `
import * as grpc from "@grpc/grpc-js";
import { create, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ExecuteNodeRequestSchema, ExecutionStatus, nodeServiceDefinition, serve, TaskError } from "@trellis/node-sdk";

const service = await serve(
  { greet: (input, ctx) => ({ hello: input.name, attempt: ctx.attempt }), bad: () => { throw new TaskError("nope"); } },
  { host: "127.0.0.1", port: 0 },
);
const Client = grpc.makeGenericClientConstructor(nodeServiceDefinition, "NodeService");
const client = new Client(service.address, grpc.credentials.createInsecure());
const call = (capability) =>
  new Promise((resolve, reject) =>
    client.executeNode(
      create(ExecuteNodeRequestSchema, { node: { id: "n", capability, input: { name: "Ada" } }, context: { attempt: 1 } }),
      (error, response) => (error ? reject(error) : resolve(response)),
    ),
  );
const ok = await call("greet");
const bad = await call("bad");
console.log(JSON.stringify([ExecutionStatus[ok.status], toJson(ValueSchema, ok.output), ExecutionStatus[bad.status], bad.errorMessage]));
client.close();
await service.close();
`;

describe("npm pack of @trellis/node-sdk", () => {
  it("gives a tarball of built JavaScript and declarations that an application installs and runs", async () => {
    const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", workDir], { cwd: SDK_DIR });
    const [packed] = JSON.parse(stdout.slice(stdout.indexOf("["))) as { filename: string; files: { path: string }[] }[];
    const files = packed!.files.map((file) => file.path);
    expect(files).toEqual(
      expect.arrayContaining([
        "package.json",
        "README.md",
        "dist/index.js",
        "dist/index.d.ts",
        "dist/serve.js",
        "dist/gen/workflow/v1/node_service_pb.js",
        "dist/gen/workflow/v1/workflow_pb.d.ts",
      ]),
    );
    expect(
      files.filter((path) => path.startsWith("src/") || path.startsWith("test/") || path.endsWith(".test.js")),
    ).toEqual([]);

    const app = join(workDir, "app");
    const installed = join(app, "node_modules", "@trellis", "node-sdk");
    mkdirSync(installed, { recursive: true });
    await run("tar", ["-xzf", join(workDir, packed!.filename), "-C", installed, "--strip-components=1"]);
    expect(readdirSync(installed).sort()).toEqual(["README.md", "dist", "package.json"]);
    const { stdout: output } = await run(process.execPath, ["--input-type=module", "-e", CONSUMER], { cwd: app });

    expect(JSON.parse(output)).toEqual(["SUCCESS", { hello: "Ada", attempt: 1 }, "TASK_ERROR", "nope"]);
  }, 120_000);
});
