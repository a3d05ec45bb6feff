import { type NodeServiceRoute, addressFor } from "@trellis/worker";

/** What the `npm start` banner tells. */
export interface BannerInput {
  /** `host:port` of the api's gRPC server. */
  api: string;
  /** The dashboard's URL. */
  dashboard: string;
  /** The HTTP side port (`/metrics`, `/healthz`, `/readyz`) of each app, by name. */
  metricsPorts: { api: number; scheduler: number; worker: number; exampleNodeService?: number | undefined };
  /** The capabilities the worker serves. */
  capabilities: readonly string[];
  /** NODE_SERVICE_ROUTES, parsed. */
  routes: readonly NodeServiceRoute[];
  /** Where capabilities no route names go: NODE_SERVICE_ADDR, or the example NodeService. */
  nodeServiceAddr: string;
  /** The example NodeService's gRPC address, when `npm start` runs it. */
  exampleNodeService?: string | undefined;
}

/**
 * The worker's capabilities grouped by the NodeService each is sent to (NODE_SERVICE_ROUTES, else the fallback), in
 * the order first met: `echo, sleep -> 127.0.0.1:50052`.
 */
export function capabilityRoutes(
  capabilities: readonly string[],
  routes: readonly NodeServiceRoute[],
  fallback: string,
): { address: string; capabilities: string[]; routed: boolean }[] {
  const groups = new Map<string, string[]>();
  for (const capability of capabilities) {
    const address = addressFor(routes, capability, fallback);
    groups.set(address, [...(groups.get(address) ?? []), capability]);
  }
  return [...groups].map(([address, list]) => ({ address, capabilities: list, routed: address !== fallback }));
}

const pad = (label: string) => `  ${label.padEnd(21)}`;

/** The banner `npm start` prints once everything listens. */
export function bannerText(b: BannerInput): string {
  const groups = capabilityRoutes(b.capabilities, b.routes, b.nodeServiceAddr);
  const worker =
    groups.length === 1 && !groups[0]!.routed
      ? [
          `${pad("worker")}${b.capabilities.join(", ")} -> ${b.nodeServiceAddr}   metrics :${b.metricsPorts.worker}/metrics`,
        ]
      : [
          `${pad("worker")}metrics :${b.metricsPorts.worker}/metrics`,
          ...groups.map(
            (g) => `    ${g.capabilities.join(", ")} -> ${g.address}${g.routed ? "   (NODE_SERVICE_ROUTES)" : ""}`,
          ),
        ];
  const example =
    b.exampleNodeService === undefined
      ? []
      : [
          `${pad("example NodeService")}grpc://${b.exampleNodeService}${
            b.metricsPorts.exampleNodeService === undefined
              ? ""
              : `   metrics :${b.metricsPorts.exampleNodeService}/metrics`
          }`,
        ];
  return [
    "",
    "Trellis is running (Ctrl-C stops it)",
    `${pad("api (gRPC)")}${b.api}   metrics :${b.metricsPorts.api}/metrics`,
    `${pad("dashboard")}${b.dashboard}   Bull Board /queues, metrics /metrics`,
    `${pad("scheduler")}metrics :${b.metricsPorts.scheduler}/metrics`,
    ...worker,
    ...example,
    "",
    "  try: npm run demo",
    "",
  ].join("\n");
}
