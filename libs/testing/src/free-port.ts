import { createServer } from "node:net";

/**
 * A TCP port that was free a moment ago on `host`: the kernel picks one for a throwaway listener, which is closed
 * before returning. Another process could take it in between; tests that bind it soon after rarely lose that race.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error("no port was assigned"))));
    });
  });
}
