import { timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Checks HTTP basic auth; answers 401 with a challenge and returns false when the credentials are
 * missing or wrong. Always true when no user is configured.
 */
export function checkBasicAuth(
  req: IncomingMessage,
  res: ServerResponse,
  credentials: { user: string | undefined; password: string | undefined },
): boolean {
  if (!credentials.user) return true;
  const header = req.headers.authorization ?? "";
  const [scheme, encoded] = header.split(" ");
  if (scheme === "Basic" && encoded) {
    const decoded = Buffer.from(encoded, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (
      colon >= 0 &&
      same(decoded.slice(0, colon), credentials.user) &&
      same(decoded.slice(colon + 1), credentials.password ?? "")
    ) {
      return true;
    }
  }
  res.writeHead(401, { "WWW-Authenticate": 'Basic realm="trellis", charset="UTF-8"', "Content-Type": "text/plain" });
  res.end("authentication required\n");
  return false;
}
