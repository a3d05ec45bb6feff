import { createRedis } from "@trellis/queue";

/** The Redis benches run on: REDIS_URL, else the local default. */
export function benchRedisUrl(): string {
  return process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
}

/**
 * Deletes every key under a BullMQ prefix (`<prefix>:*`) of `url`'s Redis (the bench's by default), so a run leaves
 * nothing behind in Redis.
 */
export async function deleteRedisPrefix(prefix: string, url = benchRedisUrl()): Promise<void> {
  const redis = createRedis(url);
  try {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== "0");
  } finally {
    redis.disconnect();
  }
}

/** Redis's version (INFO server). */
export async function redisVersion(): Promise<string> {
  const redis = createRedis(benchRedisUrl());
  try {
    const info = await redis.info("server");
    return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
  } finally {
    redis.disconnect();
  }
}
