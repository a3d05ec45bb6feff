import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import express, { type Response } from "express";

/** Where the UI's HTML, JavaScript modules and CSS live (served as they are: there is no build step). */
export const PUBLIC_DIR = fileURLToPath(new URL("../public", import.meta.url));

/** ELK's self-contained browser build (a classic script defining `ELK`), served from node_modules. */
const ELK_SCRIPT = createRequire(import.meta.url).resolve("elkjs/lib/elk.bundled.js");

// Files are revalidated on every load (ETag): without a build step they carry no content hash.
const STATIC_OPTIONS = { index: false, etag: true, lastModified: true, cacheControl: true, maxAge: 0 } as const;

function page(res: Response, file: string): void {
  res.set("cache-control", "no-cache");
  res.set("content-security-policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'");
  res.sendFile(file, { root: PUBLIC_DIR });
}

/**
 * The web UI: the workflow list at `/`, one workflow at `/workflows/:id`, the flow-control limits at `/limits`, the
 * cron schedules at `/schedules`, the live workers at `/workers`, and their assets under `/assets`.
 */
export function createUiRouter(): express.Router {
  const router = express.Router();
  router.get("/", (_req, res) => page(res, "index.html"));
  router.get("/workflows/:id", (_req, res) => page(res, "workflow.html"));
  router.get("/limits", (_req, res) => page(res, "limits.html"));
  router.get("/schedules", (_req, res) => page(res, "schedules.html"));
  router.get("/workers", (_req, res) => page(res, "workers.html"));
  router.get("/assets/vendor/elk.js", (_req, res) => {
    res.set("cache-control", "public, max-age=86400");
    res.sendFile(ELK_SCRIPT);
  });
  router.use("/assets", express.static(PUBLIC_DIR, STATIC_OPTIONS));
  router.use((_req, res) => {
    res.status(404).type("text").send("not found\n");
  });
  return router;
}
