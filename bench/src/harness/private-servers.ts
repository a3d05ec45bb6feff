import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type PrivatePostgres, type PrivateRedis, startPrivatePostgres, startPrivateRedis } from "@trellis/testing";
import type pg from "pg";
import { createRedis } from "@trellis/queue";
import { cleanup } from "./cleanup.js";
import { onAdminDatabase } from "./database.js";
import { processCpuSeconds, processTreeCpuSeconds } from "./monitor.js";

/**
 * A PostgreSQL and a Redis of a workload's own, for figures that count what the whole server did (WAL bytes,
 * statements, Redis commands and memory): on the shared servers other clients' work would be counted too. The
 * PostgreSQL is durable (fsync and full-page writes on, as a production server) and loads pg_stat_statements.
 */
export class PrivateServers {
  private constructor(
    readonly postgres: PrivatePostgres,
    readonly redis: PrivateRedis,
    private readonly unregister: () => void,
  ) {}

  /** The PostgreSQL server's URL (its `postgres` database). */
  get serverUrl(): string {
    return this.postgres.serverUrl;
  }

  /** The Redis URL. */
  get redisUrl(): string {
    return this.redis.url;
  }

  static async start(): Promise<PrivateServers> {
    const postgres = await startPrivatePostgres({
      durable: true,
      settings: ["shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=top"],
    });
    let redis: PrivateRedis;
    try {
      redis = await startPrivateRedis();
    } catch (error) {
      await postgres.close();
      throw error;
    }
    let servers: PrivateServers | null = null;
    const unregister = cleanup.add("private PostgreSQL and Redis", () => servers?.stop() ?? Promise.resolve());
    servers = new PrivateServers(postgres, redis, unregister);
    try {
      await servers.admin("create extension if not exists pg_stat_statements");
    } catch (error) {
      await servers.stop();
      throw error;
    }
    return servers;
  }

  /** Runs one statement on the server's `postgres` database. */
  admin<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    return onAdminDatabase<R>(sql, params, this.serverUrl);
  }

  /** Runs `fn` with a throwaway client of the Redis. */
  async withRedis<T>(fn: (redis: ReturnType<typeof createRedis>) => Promise<T>): Promise<T> {
    const redis = createRedis(this.redisUrl);
    try {
      return await fn(redis);
    } finally {
      redis.disconnect();
    }
  }

  /**
   * CPU seconds used so far by the PostgreSQL server (its postmaster and every process under it) and the Redis
   * server: what the engine cost each, other users of the shared servers left out.
   */
  async cpuSeconds(): Promise<{ postgres: number; redis: number }> {
    const postmaster = Number(readFileSync(join(this.postgres.dir, "data", "postmaster.pid"), "utf8").split("\n")[0]);
    this.redisPid ??= Number(/process_id:(\d+)/.exec(await this.withRedis((r) => r.info("server")))?.[1] ?? Number.NaN);
    return {
      postgres: processTreeCpuSeconds(postmaster) ?? Number.NaN,
      redis: processCpuSeconds(this.redisPid) ?? Number.NaN,
    };
  }

  private redisPid: number | undefined;
  private stopped: Promise<void> | null = null;

  /** Stops both servers and removes their files. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      await Promise.allSettled([this.postgres.close(), this.redis.close()]);
      this.unregister();
    })();
    return this.stopped;
  }
}
