import { fileURLToPath } from "node:url";

/** The repository root (where package.json and the apps live). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** Where `latest.json` is written. */
export const RESULTS_DIR = fileURLToPath(new URL("../../results/", import.meta.url));
