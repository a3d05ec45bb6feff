import { Redis, type RedisOptions } from "ioredis";

/**
 * ioredis options for BullMQ. `maxRetriesPerRequest: null` is what BullMQ workers require (a blocking
 * command must not fail after N retries); queues use the same so a Redis outage delays rather than throws.
 */
export function redisOptions(extra: RedisOptions = {}): RedisOptions {
  return {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    // Reconnect with capped backoff for as long as it takes; callers see commands wait, not fail.
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 6), 5_000),
    ...extra,
  };
}

/**
 * ioredis options for Redis over TLS with the CA of REDIS_TLS_CA; none without one (a rediss:// URL alone switches
 * ioredis to TLS checked against the system's CAs).
 */
export function redisTlsOptions(tls: { ca: Buffer } | undefined): RedisOptions {
  return tls ? { tls: { ca: tls.ca } } : {};
}

/** A Redis connection for BullMQ from a redis:// or rediss:// (TLS) URL. */
export function createRedis(redisUrl: string, extra: RedisOptions = {}): Redis {
  return new Redis(redisUrl, redisOptions(extra));
}

/**
 * Fails fast (within `timeoutMs`) unless Redis at `redisUrl` answers PING; reports its maxmemory-policy,
 * which must be `noeviction` for BullMQ. Uses a throwaway connection that does not retry.
 */
export async function checkRedis(
  redisUrl: string,
  timeoutMs = 5_000,
  extra: RedisOptions = {},
): Promise<{ evictionPolicy: string }> {
  const probe = new Redis(redisUrl, {
    ...extra,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    enableOfflineQueue: false,
  });
  // A failed TLS handshake (a certificate the CA does not sign) reaches only the error event; connect() itself then
  // rejects with "Connection is closed.", which says nothing of why.
  let cause: Error | undefined;
  probe.on("error", (error: Error) => {
    cause ??= error;
  });
  try {
    await probe.connect();
    await probe.ping();
    let evictionPolicy = "unknown";
    try {
      const reply = (await probe.config("GET", "maxmemory-policy")) as string[];
      evictionPolicy = reply[1] ?? "unknown";
    } catch {
      // CONFIG may be disabled (managed Redis): the policy cannot be checked, which is not an error.
    }
    return { evictionPolicy };
  } catch (error) {
    const where = new URL(redisUrl);
    const message = cause && cause.message !== (error as Error).message ? `${cause.message}` : (error as Error).message;
    throw new Error(`Redis at ${where.host} is not reachable: ${message}`);
  } finally {
    probe.disconnect();
  }
}
