// `npm run soak -- --minutes N [--restart-every-s S] [--retention-days D [--retention-interval-ms MS]]`: runs the
// soak against local PostgreSQL (TEST_DATABASE_URL) and a private redis-server, prints its figures and writes
// test-artifacts/soak-<time>.json. With --retention-days (a fraction of a day: 0.0005 is 43.2 s) the scheduler deletes
// finished workflows that old every MS (default 5000), and the summary says whether the tables' rows and sizes
// plateaued. Exit 1 when an invariant broke or an unexpected error was seen.
import { parseArgs } from "node:util";
import { runSoak, saveSoakReport } from "./soak.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    "restart-every-s": { type: "string", default: "60" },
    "retention-days": { type: "string" },
    "retention-interval-ms": { type: "string", default: "5000" },
  },
});
const minutes = Number(values.minutes);
const restartEveryS = Number(values["restart-every-s"]);
const retentionDays = values["retention-days"] === undefined ? undefined : Number(values["retention-days"]);
const retentionIntervalMs = Number(values["retention-interval-ms"]);
if (
  !(minutes > 0) ||
  !(restartEveryS > 0) ||
  (retentionDays !== undefined && !(retentionDays > 0)) ||
  !(Number.isInteger(retentionIntervalMs) && retentionIntervalMs >= 1_000)
) {
  console.error(
    "usage: npm run soak -- --minutes N [--restart-every-s S] [--retention-days D [--retention-interval-ms MS]]\n" +
      "  (N > 0, S > 0; D > 0 days, decimals allowed, e.g. 0.0005 = 43.2 s; MS a whole number >= 1000, default 5000)",
  );
  process.exit(2);
}

const log = (line: string) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}`);
const report = await runSoak({
  durationMs: minutes * 60_000,
  restartEveryMs: restartEveryS * 1_000,
  sampleEveryMs: Math.min(30_000, Math.max(5_000, (minutes * 60_000) / 40)),
  log,
  ...(retentionDays !== undefined ? { retention: { days: retentionDays, intervalMs: retentionIntervalMs } } : {}),
});
const path = saveSoakReport(report);
log(
  `workflows created ${report.workflowsCreated}, in the database at the end ${JSON.stringify(report.workflows)}, nodes ${report.nodes}, restarts ${JSON.stringify(report.restarts)}`,
);
log(`redelivered keys ${report.redeliveredKeys}, duplicate effects ${report.duplicateEffects}`);
console.log("\nfootprint (first sample after warm-up -> end, max in between):");
for (const [name, f] of Object.entries(report.footprint)) {
  console.log(`  ${name.padEnd(28)} ${String(f.warm).padStart(8)} -> ${String(f.end).padStart(8)}   max ${f.max}`);
}
const t = report.tables;
console.log(
  `\ntables while the load ran (${t.samples} samples; first, max of the middle third, max of the last third, end; plateau: last third's max at most ${t.tolerance * 100}% above the middle third's):`,
);
const fmt = (name: string, v: number) => (name.endsWith(".bytes") ? `${(v / 1048576).toFixed(1)} MiB` : String(v));
for (const [name, f] of Object.entries(t.figures)) {
  console.log(
    `  ${name.padEnd(22)} ${[f.first, f.middleMax, f.lastMax, f.end].map((v) => fmt(name, v).padStart(10)).join(" ")}   ${f.growth >= 0 ? "+" : ""}${(f.growth * 100).toFixed(1)}% ${f.plateaued ? "plateau" : "GROWING"}`,
  );
}
console.log(
  report.retention
    ? `retention ${report.retention.days} days every ${report.retention.intervalMs} ms deleted ${report.retention.deletedWorkflows} of ${report.workflowsCreated} workflows (the soak ran VACUUM ${report.retention.soakVacuums} times); tables ${t.plateaued ? "plateaued" : "did NOT all plateau"}`
    : `retention: the default (30 days; nothing deleted); tables ${t.plateaued ? "plateaued" : "grew"} (use --retention-days to see them plateau)`,
);
const problems = [...report.unexpectedErrors, ...report.violationsDuringRun, ...report.finalViolations];
console.log(problems.length === 0 ? "\ninvariants I1-I5 held throughout" : `\nPROBLEMS:\n${problems.join("\n")}`);
console.log(`report: ${path}`);
process.exit(problems.length === 0 ? 0 : 1);
