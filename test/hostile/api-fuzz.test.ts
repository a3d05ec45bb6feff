// Hostile input: property-based fuzzing of CreateWorkflow, EditWorkflow and UpdateNode through the real api process,
// and raw bytes at its port. Never a crash, never INTERNAL (or UNKNOWN) for bad input, never a partial write.
import { connect } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import {
  EditType,
  NodeSchema,
  type Node,
  type WorkflowService,
  type GrpcClient,
  CreateWorkflowRequestSchema,
} from "@trellis/proto";
import { type FaultStack, checkInvariants, describeViolations, startFaultStack } from "@trellis/testing";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

let stack: FaultStack;
let api: GrpcClient<typeof WorkflowService>;
let address: string;

beforeAll(async () => {
  stack = await startFaultStack({ name: "hostile_fuzz", handler: () => ({}), logLevel: "warn" });
  const started = await stack.startApi();
  api = started.client;
  address = started.address;
}, 60_000);

afterAll(async () => {
  await stack?.close();
});

/** The answers bad input may get; anything else (INTERNAL, UNKNOWN, UNAVAILABLE...) is a bug. */
const REFUSALS = new Set(["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "NOT_FOUND"]);

async function outcome(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "OK";
  } catch (error) {
    const e = error as grpc.ServiceError;
    const code = grpc.status[e.code] ?? String(e.code);
    if (!REFUSALS.has(code)) throw new Error(`answered ${code}: ${e.details}`);
    if (process.env.FUZZ_DEBUG) console.log("REFUSED", code, e.details);
    return code;
  }
}

function deadline(): number {
  return Date.now() + 10_000;
}

/** Rows of every table: a rejected request must leave them exactly as they were. */
async function snapshot(): Promise<string> {
  const { rows } = await stack.db.pool.query(
    `select (select count(*) from workflows) w, (select count(*) from nodes) n, (select count(*) from node_edges) e,
            (select count(*) from workflow_events) ev, (select coalesce(sum(event_seq), 0) from workflows) seq,
            (select md5(coalesce(string_agg(workflow_id || id || status || name || input::text || labels::text || parent_ids::text, ',' order by workflow_id, id), '')) from nodes) h`,
  );
  return JSON.stringify(rows[0]);
}

// ------------------------------------------------------------------------------------------ arbitraries

const hostileChar = fc.oneof(
  { weight: 40, arbitrary: fc.string({ unit: "grapheme-ascii", minLength: 1, maxLength: 1 }) },
  {
    weight: 12,
    arbitrary: fc.constantFrom(
      "\u0001",
      "\u001b",
      "\u007f",
      "\u200b",
      "\u202e",
      "\ufeff",
      "\ud800",
      "\udfff",
      "😀",
      "é",
      "𝒳",
      "\n",
      "\\",
      '"',
      "'",
      "%",
      ":",
      "/",
    ),
  },
  { weight: 4, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
  { weight: 1, arbitrary: fc.constant("\u0000") },
);
const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z0-9_.-]{1,10}$/) },
  { weight: 3, arbitrary: fc.array(hostileChar, { maxLength: 16 }).map((chars) => chars.join("")) },
  { weight: 1, arbitrary: fc.constantFrom("", "x".repeat(129), "y".repeat(300)) },
);
const capability = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom("echo", "llm.chat", "web-search_2") },
  { weight: 1, arbitrary: hostileString },
);
const jsonKey = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z]{1,6}$/) },
  { weight: 1, arbitrary: hostileString },
);
const jsonInput = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.dictionary(jsonKey, fc.jsonValue({ maxDepth: 3, stringUnit: "grapheme" }), { maxKeys: 4 }),
  },
  {
    weight: 1,
    arbitrary: fc.dictionary(hostileString, fc.jsonValue({ maxDepth: 4, stringUnit: hostileChar }), { maxKeys: 4 }),
  },
) as fc.Arbitrary<Record<string, never>>;
const labels = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9._/-]{0,10}$/), hostileString, { maxKeys: 4 }),
  },
  { weight: 1, arbitrary: fc.dictionary(hostileString, hostileString, { maxKeys: 4 }) },
);
const duration = fc.record({
  seconds: fc.bigInt({ min: -100n, max: 10n ** 12n }),
  nanos: fc.integer({ min: -2_000_000_000, max: 2_000_000_000 }),
});
const retryPolicy = fc.record(
  {
    maxAttempts: fc.integer({ min: -5, max: 1_000 }),
    initialBackoff: duration,
    maxBackoff: duration,
    retryTaskErrors: fc.boolean(),
  },
  { requiredKeys: [] },
);

/** A node: mostly well-formed (so requests get past validation and exercise storage), sometimes anything. */
function nodeArb(ids: fc.Arbitrary<string>) {
  const plain = fc.record(
    {
      id: ids,
      name: fc.oneof(fc.constant(""), hostileString),
      capability: fc.constantFrom("echo", "llm.chat"),
      parentIds: fc.array(ids, { maxLength: 2 }),
      input: jsonInput,
      labels: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9._-]{0,8}$/), hostileString, { maxKeys: 3 }),
    },
    { requiredKeys: ["id", "capability"] },
  );
  return fc.oneof({ weight: 3, arbitrary: plain }, { weight: 1, arbitrary: anyNode(ids) });
}

function anyNode(ids: fc.Arbitrary<string>) {
  return fc.record(
    {
      id: ids,
      name: hostileString,
      capability,
      parentIds: fc.array(ids, { maxLength: 3 }),
      input: jsonInput,
      retryPolicy,
      timeout: duration,
      labels,
      // Output-only fields a caller has no business setting: ignored, never trusted.
      status: fc.integer({ min: 0, max: 9 }),
      attempt: fc.integer({ min: -3, max: 100 }),
    },
    { requiredKeys: ["id", "capability"] },
  );
}

const idPool = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom("a", "b", "c", "d", "e", "f", "g") },
  { weight: 1, arbitrary: hostileString },
);

/** Text a person might well type: unicode, emoji, control characters (no NUL), within the length limits. */
const oddText = fc.oneof(
  fc.string({ unit: "grapheme", maxLength: 30 }),
  fc.constantFrom(
    "tab\there",
    "bell\u0007",
    "rtl \u202eevil",
    "emoji 😀🚀",
    "zero\u200bwidth",
    "\u001b[31mred",
    "ünïcödé",
  ),
);

/** A CreateWorkflow that must be accepted: a DAG by construction, odd but storable text. */
const validCreate = fc.integer({ min: 1, max: 8 }).chain((size) =>
  fc.record({
    name: oddText,
    nodes: fc.tuple(
      ...Array.from({ length: size }, (_, i) =>
        fc.record({
          id: fc.constant(`n${i}`),
          name: oddText,
          capability: fc.constantFrom("echo", "llm.chat"),
          parentIds:
            i === 0
              ? fc.constant([])
              : fc.uniqueArray(fc.constantFrom(...Array.from({ length: i }, (_, j) => `n${j}`)), { maxLength: 3 }),
          input: fc.dictionary(
            fc.string({ unit: "grapheme", maxLength: 8 }),
            fc.jsonValue({ maxDepth: 3, stringUnit: "grapheme" }),
            { maxKeys: 3 },
          ),
          labels: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9._/-]{0,10}$/), oddText, { maxKeys: 3 }),
        }),
      ),
    ),
    labels: fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9._/-]{0,10}$/), oddText, { maxKeys: 3 }),
  }),
) as unknown as fc.Arbitrary<Record<string, never>>;

// ------------------------------------------------------------------------------------------ properties

describe("fuzzing the api with hostile requests", () => {
  it("CreateWorkflow: every request is stored whole or refused with a precise code and nothing stored", async () => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          { weight: 1, arbitrary: validCreate },
          {
            weight: 1,
            arbitrary: fc.record({
              name: hostileString,
              nodes: fc.uniqueArray(nodeArb(idPool), { maxLength: 6, selector: (n) => n.id }),
              input: jsonInput,
              labels,
              requestId: fc.option(hostileString, { nil: undefined }),
            }),
          },
        ),
        async (request) => {
          const before = await snapshot();
          let created: Awaited<ReturnType<typeof api.createWorkflow>> | undefined;
          const code = await outcome(
            api.createWorkflow(request as never, { deadline: deadline() }).then((r) => {
              created = r;
            }),
          );
          if (code === "OK") {
            accepted++;
            // Stored as given: read back, every name is the same text (lone surrogates were U+FFFD on the wire).
            const stored = await api.getWorkflow({ workflowId: created!.workflow!.id }, { deadline: deadline() });
            expect(stored.workflow!.name).toBe(created!.workflow!.name);
            expect(stored.workflow!.nodes.map((n) => [n.id, n.name]).sort()).toEqual(
              created!.workflow!.nodes.map((n) => [n.id, n.name]).sort(),
            );
            return;
          }
          expect(await snapshot()).toBe(before);
        },
      ),
      { numRuns: 150 },
    );
    // The generators do produce valid workflows too: the property is not vacuous.
    expect(accepted).toBeGreaterThan(30);
  }, 120_000);

  it("EditWorkflow and UpdateNode: a batch applies whole or not at all, and the graph stays sound", async () => {
    const base = (
      await api.createWorkflow(
        {
          name: "fuzz-edits",
          nodes: [
            create(NodeSchema, { id: "a", capability: "echo" }),
            create(NodeSchema, { id: "b", capability: "echo", parentIds: ["a"] }),
            create(NodeSchema, { id: "c", capability: "echo", parentIds: ["a", "b"] }),
          ],
        },
        { deadline: deadline() },
      )
    ).workflow!;
    const mask = fc.record({
      paths: fc.array(
        fc.oneof(
          fc.constantFrom("name", "capability", "parent_ids", "input", "retry_policy", "timeout", "labels"),
          fc.constantFrom("id", "status", "output", "bogus", "", "name.x"),
        ),
        { maxLength: 4 },
      ),
    });
    const edit = fc.record(
      {
        type: fc.oneof(
          fc.constantFrom(EditType.INSERT, EditType.UPDATE, EditType.DELETE),
          fc.integer({ min: 0, max: 9 }),
        ),
        node: nodeArb(idPool),
        nodeId: idPool,
        updateMask: mask,
      },
      { requiredKeys: ["type"] },
    );
    // Edits that must apply: a new node under an existing one (fresh id each time), or a renamed PENDING node.
    let fresh = 0;
    const validEdits = fc.oneof(
      fc
        .record({ parent: fc.constantFrom("a", "b", "c"), name: oddText })
        .map(({ parent, name }) => [
          { type: EditType.INSERT, node: { id: `x${fresh++}`, name, capability: "echo", parentIds: [parent] } },
        ]),
      fc
        .record({ id: fc.constantFrom("a", "b", "c"), name: oddText })
        .map(({ id, name }) => [{ type: EditType.UPDATE, node: { id, name }, updateMask: { paths: ["name"] } }]),
    ) as unknown as fc.Arbitrary<never[]>;
    const codes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ kind: fc.constant("edit" as const), edits: fc.array(edit, { maxLength: 5 }) }),
          fc.record({ kind: fc.constant("edit" as const), edits: validEdits }),
          fc.record({ kind: fc.constant("update" as const), node: nodeArb(idPool), updateMask: mask }),
          fc.record({ kind: fc.constant("unknown" as const), workflowId: hostileString }),
        ),
        async (request) => {
          const before = await snapshot();
          let code: string;
          if (request.kind === "edit") {
            code = await outcome(
              api.editWorkflow({ workflowId: base.id, edits: request.edits as never }, { deadline: deadline() }),
            );
          } else if (request.kind === "update") {
            code = await outcome(
              api.updateNode(
                { workflowId: base.id, node: request.node as never, updateMask: request.updateMask },
                { deadline: deadline() },
              ),
            );
          } else {
            code = await outcome(api.getWorkflow({ workflowId: request.workflowId }, { deadline: deadline() }));
            await outcome(api.editWorkflow({ workflowId: request.workflowId, edits: [] }, { deadline: deadline() }));
          }
          codes.set(`${request.kind} ${code}`, (codes.get(`${request.kind} ${code}`) ?? 0) + 1);
          if (code !== "OK") expect(await snapshot()).toBe(before);
        },
      ),
      { numRuns: 250 },
    );
    expect(codes.get("edit OK") ?? 0).toBeGreaterThan(0);
    const violations = await checkInvariants({
      pool: stack.db.pool,
      recovery: stack.timings,
      workflowIds: [base.id],
    });
    expect(violations, describeViolations(violations)).toEqual([]);
  }, 120_000);

  it("raw bytes at the gRPC port: garbage connections are dropped, undecodable messages refused, the server stays up", async () => {
    const [host, port] = [address.split(":")[0]!, Number(address.split(":")[1])];
    // 1. Not even HTTP/2: random bytes, and the HTTP/2 preface followed by random frames.
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), fc.boolean(), async (bytes, preface) => {
        await new Promise<void>((resolve) => {
          const socket = connect(port, host, () => {
            if (preface) socket.write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            socket.end(Buffer.from(bytes));
          });
          socket.on("error", () => resolve());
          socket.on("close", () => resolve());
          // The server may keep a half-closed connection open: give it a moment to answer, then hang up.
          setTimeout(() => socket.destroy(), 150);
        });
      }),
      { numRuns: 60 },
    );
    // 2. Proper gRPC framing, arbitrary bytes as the message of every unary method.
    const channel = new grpc.Client(address, grpc.credentials.createInsecure());
    const methods = [
      "CreateWorkflow",
      "GetWorkflow",
      "ListWorkflows",
      "UpdateWorkflow",
      "GetNode",
      "UpdateNode",
      "EditWorkflow",
    ];
    const codes = new Map<string, number>();
    try {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...methods), fc.uint8Array({ maxLength: 512 }), async (method, bytes) => {
          const code = await new Promise<string>((resolve) => {
            channel.makeUnaryRequest(
              `/workflow.v1.WorkflowService/${method}`,
              (b: Buffer) => b,
              (b: Buffer) => b,
              Buffer.from(bytes),
              new grpc.Metadata(),
              { deadline: deadline() },
              (error) => resolve(error ? (grpc.status[error.code] ?? "?") : "OK"),
            );
          });
          codes.set(code, (codes.get(code) ?? 0) + 1);
          expect(["OK", ...REFUSALS]).toContain(code);
        }),
        { numRuns: 200 },
      );
      // A message too deeply nested for the protobuf decoder (its limit is 100 nested messages) is bad input too.
      let deep: Record<string, unknown> = { leaf: true };
      for (let i = 0; i < 80; i++) deep = { d: deep };
      await expect(
        api.createWorkflow(
          create(CreateWorkflowRequestSchema, {
            name: "deep",
            nodes: [{ id: "a", capability: "echo", input: deep as never }],
          }),
          { deadline: deadline() },
        ),
      ).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    } finally {
      channel.close();
    }
    // Still up and serving.
    const ok = await api.createWorkflow(
      { name: "after-garbage", nodes: [create(NodeSchema, { id: "a", capability: "echo" })] as Node[] },
      { deadline: deadline() },
    );
    expect(ok.workflow!.nodes).toHaveLength(1);
    expect(stack.apps.processes.every((p) => p.exitStatus === null)).toBe(true);
  }, 120_000);
});
