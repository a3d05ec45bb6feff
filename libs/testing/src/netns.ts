import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "./wait-for.js";

/**
 * Hosts on a real network for tests: Linux network namespaces made with Debian's iproute2 (`ip netns`), each with
 * one veth link into a bridge that lives in a "switch" namespace of its own. Addresses exist only inside the
 * namespaces made here; the root namespace's interfaces and routes are never touched (the veth pairs are created
 * inside the switch namespace and their host ends moved straight into the hosts). A process runs on a host through
 * `ip netns exec <namespace>` ({@link NetHost.prefix}); the test itself stays in the root namespace and reaches the
 * hosts through a {@link Gateway}: a host of its own whose forwarder turns Unix sockets (which network namespaces
 * do not separate) into TCP connections on the network.
 */

/** Where iproute2's `ip` is, or null. */
export function ipCommand(): string | null {
  for (const path of ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]) {
    if (existsSync(path)) return path;
  }
  const found = spawnSync("sh", ["-c", "command -v ip"], { encoding: "utf8" });
  return found.status === 0 && found.stdout.trim() ? found.stdout.trim() : null;
}

/** Why network namespaces cannot be made here (not root, no `ip`, `ip netns add` refused), or undefined. */
function whyNoNamespaces(): string | undefined {
  if (process.platform !== "linux") return `network namespaces need Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return "network namespaces need root (`id -u` is not 0)";
  const ip = ipCommand();
  if (!ip) return "iproute2's `ip` is not installed (apt-get install -y iproute2)";
  const probe = `trnet-probe-${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
  const added = spawnSync(ip, ["netns", "add", probe], { encoding: "utf8" });
  if (added.status !== 0) return `\`ip netns add\` failed: ${(added.stderr || added.error?.message || "").trim()}`;
  spawnSync(ip, ["netns", "del", probe], { stdio: "ignore" });
  return undefined;
}

/**
 * Why tests on network namespaces should be skipped, or undefined when they run. Under CI (`CI` set) a machine that
 * cannot make them fails the test instead (CI runs as root with iproute2: see .ci/run).
 */
export function netnsSkipReason(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const why = whyNoNamespaces();
  if (why && env.CI) throw new Error(`cannot make network namespaces under CI: ${why}`);
  return why;
}

/** Options of {@link Network.create}. */
export interface NetworkOptions {
  /** The first three octets of the /24 the hosts are numbered in. @default "10.77.0" */
  subnet?: string;
}

/** One host of a {@link Network}: a network namespace with one link (`eth0`) into the network's bridge. */
export interface NetHost {
  /** Its name in the test, e.g. `worker1`. */
  readonly name: string;
  /** Its network namespace (unique per run), e.g. `trnet-4242-k3x9-worker1`. */
  readonly namespace: string;
  /** Its address on the network, e.g. `10.77.0.31`. */
  readonly address: string;
  /** The network it is on, e.g. `10.77.0.0/24`. */
  readonly network: string;
  /** Its link's name inside its namespace. */
  readonly link: string;
  /** The command prefix that runs a program on this host: `ip netns exec <namespace>`. */
  readonly prefix: readonly string[];
  /** Whether its link is up. */
  readonly isUp: boolean;
  /**
   * `ip link set eth0 down` inside its namespace: the host is cut off from every other one (its processes live on;
   * their TCP connections stay open, unanswered, as behind a pulled cable).
   */
  cut(): void;
  /** `ip link set eth0 up`: connected again (the kernel puts the subnet's route back with the link). */
  restore(): void;
  /** Runs `ip -n <namespace> <args...>`; throws on failure. */
  ip(...args: string[]): string;
}

const PREFIX = "trnet";
/** Namespaces of this process, deleted on exit whatever happened. */
const live = new Set<string>();
let exitHookInstalled = false;

function ipOrThrow(ip: string, args: readonly string[]): string {
  const result = spawnSync(ip, args, { encoding: "utf8", timeout: 20_000 });
  if (result.status !== 0) {
    throw new Error(`ip ${args.join(" ")} failed: ${(result.stderr || result.error?.message || "").trim()}`);
  }
  return result.stdout;
}

/** Kills whatever still runs inside a namespace (SIGKILL), then deletes it. Never throws. */
function removeNamespace(ip: string, namespace: string): void {
  const pids = spawnSync(ip, ["netns", "pids", namespace], { encoding: "utf8" });
  for (const pid of (pids.stdout ?? "").split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), "SIGKILL");
    } catch {
      // Already gone.
    }
  }
  spawnSync(ip, ["netns", "del", namespace], { stdio: "ignore" });
}

function installExitHook(ip: string): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const namespace of live) removeNamespace(ip, namespace);
    live.clear();
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Deletes the namespaces of earlier runs whose test process is gone (killed before its exit hook ran), with what
 * still ran in them. Their names carry that process's pid: `trnet-<pid>-<run>-<host>`.
 */
export function sweepStaleNamespaces(): string[] {
  const ip = ipCommand();
  if (!ip) return [];
  const listed = spawnSync(ip, ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
  const swept: string[] = [];
  for (const line of listed.split("\n")) {
    const namespace = line.split(" ")[0] ?? "";
    const match = new RegExp(`^${PREFIX}-(\\d+)-[a-z0-9]+-[a-z0-9]+$`).exec(namespace);
    if (!match || isAlive(Number(match[1])) || live.has(namespace)) continue;
    removeNamespace(ip, namespace);
    swept.push(namespace);
  }
  return swept;
}

/**
 * A /24 of hosts joined by one bridge: {@link Network.create} makes the switch namespace and its bridge,
 * {@link Network.addHost} each host. {@link Network.destroy} (and, should the test process die first, its exit hook
 * or the next run's sweep) deletes every namespace it made, killing what still ran inside.
 */
export class Network {
  private readonly hosts = new Map<string, NetHost>();
  private readonly namespaces: string[] = [];

  private constructor(
    private readonly ipPath: string,
    /** This run's id, part of every namespace name: `<pid>-<random>`. */
    readonly id: string,
    /** The first three octets of the addresses. */
    readonly subnet: string,
    /** The namespace holding the bridge `br0`. */
    readonly switchNamespace: string,
  ) {}

  /** Makes the switch namespace and its bridge (after sweeping namespaces left by dead runs). */
  static create(options: NetworkOptions = {}): Network {
    const ip = ipCommand();
    if (!ip) throw new Error("iproute2's `ip` is not installed");
    installExitHook(ip);
    sweepStaleNamespaces();
    const id = `${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
    const network = new Network(ip, id, options.subnet ?? "10.77.0", `${PREFIX}-${id}-switch`);
    network.addNamespace(network.switchNamespace);
    network.run(["-n", network.switchNamespace, "link", "add", "br0", "type", "bridge"]);
    network.run(["-n", network.switchNamespace, "link", "set", "br0", "up"]);
    return network;
  }

  /** The network's CIDR, e.g. `10.77.0.0/24`. */
  get cidr(): string {
    return `${this.subnet}.0/24`;
  }

  private run(args: readonly string[]): string {
    return ipOrThrow(this.ipPath, args);
  }

  private addNamespace(namespace: string): void {
    this.run(["netns", "add", namespace]);
    live.add(namespace);
    this.namespaces.push(namespace);
  }

  /**
   * Adds a host named `name` (lower-case letters and digits, at most 12) at `<subnet>.<octet>`: a namespace, a veth
   * pair made inside the switch namespace (`v<name>` on the bridge) whose other end becomes the host's `eth0`.
   */
  addHost(name: string, octet: number): NetHost {
    if (!/^[a-z0-9]{1,12}$/.test(name)) throw new Error(`host name ${JSON.stringify(name)}: [a-z0-9]{1,12}`);
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    if (!Number.isInteger(octet) || octet < 2 || octet > 254) throw new Error(`octet ${octet}: 2..254`);
    const namespace = `${PREFIX}-${this.id}-${name}`;
    const address = `${this.subnet}.${octet}`;
    const port = `v${name}`;
    this.addNamespace(namespace);
    const sw = this.switchNamespace;
    this.run(["-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace]);
    this.run(["-n", sw, "link", "set", port, "master", "br0", "up"]);
    this.run(["-n", namespace, "addr", "add", `${address}/24`, "dev", "eth0"]);
    this.run(["-n", namespace, "link", "set", "lo", "up"]);
    this.run(["-n", namespace, "link", "set", "eth0", "up"]);
    let up = true;
    const ip = this.ipPath;
    const host: NetHost = {
      name,
      namespace,
      address,
      network: this.cidr,
      link: "eth0",
      prefix: [ip, "netns", "exec", namespace],
      get isUp() {
        return up;
      },
      cut: () => {
        this.run(["-n", namespace, "link", "set", "eth0", "down"]);
        up = false;
      },
      restore: () => {
        this.run(["-n", namespace, "link", "set", "eth0", "up"]);
        up = true;
      },
      ip: (...args) => this.run(["-n", namespace, ...args]),
    };
    this.hosts.set(name, host);
    return host;
  }

  /** The host named `name`. */
  host(name: string): NetHost {
    const host = this.hosts.get(name);
    if (!host) throw new Error(`no host ${name}`);
    return host;
  }

  /** The host with this address, if any. */
  hostAt(address: string): NetHost | undefined {
    return [...this.hosts.values()].find((h) => h.address === address);
  }

  /** Every host, in the order added. */
  get all(): NetHost[] {
    return [...this.hosts.values()];
  }

  /** Kills what still runs in its namespaces and deletes them (hosts first, the switch last). Safe to call twice. */
  destroy(): void {
    for (const namespace of this.namespaces.splice(0).reverse()) {
      removeNamespace(this.ipPath, namespace);
      live.delete(namespace);
    }
    this.hosts.clear();
  }
}

/**
 * The forwarder a {@link Gateway} runs on its host (CommonJS for `node -e`): each stdin line `<socket> <host> <port>`
 * opens a Unix socket whose every connection is piped to a new TCP connection to host:port; it answers one JSON line
 * per socket on stdout. It exits when its stdin ends (the test process is gone).
 */
const FORWARDER = `
const net = require("node:net");
require("node:readline").createInterface({ input: process.stdin }).on("line", (line) => {
  const [path, host, port] = line.trim().split(" ");
  const server = net.createServer((down) => {
    const up = net.connect({ host, port: Number(port) });
    down.on("error", () => up.destroy());
    up.on("error", () => down.destroy());
    down.on("close", () => up.end());
    up.on("close", () => down.end());
    down.pipe(up);
    up.pipe(down);
  });
  server.on("error", (e) => console.log(JSON.stringify({ path, error: e.message })));
  server.listen(path, () => console.log(JSON.stringify({ path, listening: true })));
});
process.stdin.on("end", () => process.exit(0));
`;

/** An HTTP answer read through a {@link Gateway}. */
export interface GatewayResponse {
  status: number;
  body: string;
}

/**
 * The test's seat on a {@link Network}: a host whose forwarder process gives the test (in the root namespace) a Unix
 * socket per `address:port` it asks for; each connection to it is a TCP connection from the gateway's host over the
 * bridge. gRPC clients dial `unix:<socket>` ({@link Gateway.grpcTarget}); HTTP goes through {@link Gateway.get}.
 */
export class Gateway {
  private readonly sockets = new Map<string, Promise<string>>();
  private readonly output: string[] = [];
  private count = 0;

  private constructor(
    /** The host it runs on. */
    readonly host: NetHost,
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {
    let partial = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      this.output.push(...lines);
    });
    child.stderr?.on("data", (chunk: Buffer) => this.output.push(chunk.toString("utf8")));
  }

  /** Starts the forwarder on `host` (a host of the network no app runs on). */
  static start(host: NetHost): Gateway {
    // Short: a Unix socket path has at most 107 bytes.
    const dir = mkdtempSync(join(tmpdir(), "trgw-"));
    const child = spawn(host.prefix[0]!, [...host.prefix.slice(1), process.execPath, "-e", FORWARDER], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    return new Gateway(host, child, dir);
  }

  /** The Unix socket that reaches `target` (`address:port`) from the gateway's host; opened on first use. */
  socketFor(target: string): Promise<string> {
    let socket = this.sockets.get(target);
    if (!socket) {
      socket = this.open(target);
      this.sockets.set(target, socket);
    }
    return socket;
  }

  private async open(target: string): Promise<string> {
    const colon = target.lastIndexOf(":");
    const address = target.slice(0, colon);
    const port = target.slice(colon + 1);
    const path = join(this.dir, `${++this.count}.sock`);
    if (this.child.exitCode !== null) throw new Error(`the gateway's forwarder exited: ${this.output.join("\n")}`);
    this.child.stdin?.write(`${path} ${address} ${port}\n`);
    await waitFor(
      () => {
        for (const line of this.output) {
          if (!line.includes(path)) continue;
          const answer = JSON.parse(line) as { listening?: boolean; error?: string };
          if (answer.error) throw new Error(`gateway socket for ${target}: ${answer.error}`);
          if (answer.listening) return true;
        }
        if (this.child.exitCode !== null) throw new Error(`the gateway's forwarder exited: ${this.output.join("\n")}`);
        return false;
      },
      { timeoutMs: 20_000, intervalMs: 20, description: `the gateway's socket for ${target}` },
    );
    return path;
  }

  /** A gRPC target (`unix:<socket>`) that reaches `target` over the network. */
  async grpcTarget(target: string): Promise<string> {
    return `unix:${await this.socketFor(target)}`;
  }

  /** `GET http://<target><path>` from the gateway's host; fails after `timeoutMs` without an answer. */
  async get(target: string, path: string, timeoutMs = 2_000): Promise<GatewayResponse> {
    const socketPath = await this.socketFor(target);
    return new Promise((resolve, reject) => {
      const req = request({ socketPath, path, method: "GET", agent: false, headers: { connection: "close" } });
      const timer = setTimeout(
        () => req.destroy(new Error(`GET ${target}${path}: no answer in ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on("response", (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          body += chunk;
        });
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, body });
        });
        res.on("error", (error) => {
          clearTimeout(timer);
          reject(error);
        });
      });
      req.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      req.end();
    });
  }

  /** A readiness probe for an app on `host` whose HTTP_ADDR port is `port` (for `readyz` of startApp). */
  readyz(host: NetHost, port: number): () => Promise<number | null> {
    return async () => {
      try {
        return (await this.get(`${host.address}:${port}`, "/readyz", 1_000)).status;
      } catch {
        return null;
      }
    };
  }

  /** Stops the forwarder and removes its sockets. */
  close(): void {
    this.child.stdin?.end();
    this.child.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}
