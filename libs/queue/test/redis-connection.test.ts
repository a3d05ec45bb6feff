import { parseRedisUrl } from "@trellis/config";
import { Cluster, Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import {
  capabilityOfQueueName,
  chunkStreamKey,
  clusterOptions,
  connectRedis,
  createRedis,
  queueNameOf,
} from "../src/index.js";

describe("connectRedis", () => {
  it("makes a Cluster of a redis+cluster:// URL and a Redis of a redis:// one (lazily: nothing is dialled)", () => {
    const cluster = connectRedis("redis+cluster://u:pw@127.0.0.1:7000,127.0.0.1:7001", { lazyConnect: true });
    const server = connectRedis("redis://127.0.0.1:6379", { lazyConnect: true });
    try {
      expect(cluster).toBeInstanceOf(Cluster);
      expect(cluster.isCluster).toBe(true);
      expect(server).toBeInstanceOf(Redis);
      expect(server.isCluster).toBe(false);
    } finally {
      cluster.disconnect();
      server.disconnect();
    }
  });

  it("gives the cluster its own options and every node the rest (credentials, TLS, BullMQ's retries)", () => {
    const target = parseRedisUrl("rediss+cluster://app:pw@10.0.0.1:7000");
    if (target.kind !== "cluster") throw new Error("not a cluster");
    const options = clusterOptions(target, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    expect(options).toMatchObject({
      lazyConnect: true,
      enableOfflineQueue: false,
      enableReadyCheck: true,
      redisOptions: { username: "app", password: "pw", tls: {}, maxRetriesPerRequest: 1 },
    });
    expect(options.redisOptions).not.toHaveProperty("lazyConnect");
    expect(options.redisOptions).not.toHaveProperty("retryStrategy");
    expect(options.clusterRetryStrategy?.(1)).toBe(200);
    const ca = Buffer.from("pem");
    expect(clusterOptions(target, { tls: { ca } }).redisOptions?.tls).toEqual({ ca });
    // BullMQ workers need maxRetriesPerRequest null, the default.
    expect(clusterOptions(target).redisOptions?.maxRetriesPerRequest).toBeNull();
  });

  it("createRedis is for one server only", () => {
    expect(() => createRedis("redis+cluster://127.0.0.1:7000")).toThrow(/connectRedis/);
  });
});

describe("names on a cluster", () => {
  it("hash-tags queue names and chunk streams only on a cluster", () => {
    expect(queueNameOf("llm.chat", false)).toBe("llm.chat");
    expect(queueNameOf("llm.chat", true)).toBe("{llm.chat}");
    expect(capabilityOfQueueName("{llm.chat}", true)).toBe("llm.chat");
    expect(capabilityOfQueueName("llm.chat", false)).toBe("llm.chat");
    const ref = { workflowId: "wf", nodeId: "a", attempt: 2 };
    expect(chunkStreamKey("trellis", ref)).toBe("trellis:chunks:wf/a/2");
    expect(chunkStreamKey("trellis", ref, true)).toBe("trellis:chunks:{wf}/a/2");
  });
});
