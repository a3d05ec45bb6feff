// `npm run soak -- --minutes N [--restart-every-s S]`: runs the soak against local PostgreSQL (TEST_DATABASE_URL) and
// a private redis-server, prints its figures and writes test-artifacts/soak-<time>.json. Exit 1 when an invariant
// broke or an unexpected error was seen.
import { parseArgs } from "node:util";
import { runSoak, saveSoakReport } from "./soak.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    "restart-every-s": { type: "string", default: "60" },
  },
});
const minutes = Number(values.minutes);
const restartEveryS = Number(values["restart-every-s"]);
if (!(minutes > 0) || !(restartEveryS > 0)) {
  console.error("usage: npm run soak -- --minutes N [--restart-every-s S]   (N > 0, S > 0)");
  process.exit(2);
}

const log = (line: string) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}`);
const report = await runSoak({
  durationMs: minutes * 60_000,
  restartEveryMs: restartEveryS * 1_000,
  sampleEveryMs: Math.min(30_000, Math.max(5_000, (minutes * 60_000) / 40)),
  log,
});
const path = saveSoakReport(report);
log(
  `workflows ${JSON.stringify(report.workflows)}, nodes ${report.nodes}, restarts ${JSON.stringify(report.restarts)}`,
);
log(`redelivered keys ${report.redeliveredKeys}, duplicate effects ${report.duplicateEffects}`);
console.log("\nfootprint (first sample after warm-up -> end, max in between):");
for (const [name, f] of Object.entries(report.footprint)) {
  console.log(`  ${name.padEnd(28)} ${String(f.warm).padStart(8)} -> ${String(f.end).padStart(8)}   max ${f.max}`);
}
const problems = [...report.unexpectedErrors, ...report.violationsDuringRun, ...report.finalViolations];
console.log(problems.length === 0 ? "\ninvariants I1-I5 held throughout" : `\nPROBLEMS:\n${problems.join("\n")}`);
console.log(`report: ${path}`);
process.exit(problems.length === 0 ? 0 : 1);
