// Interop: the official TypeScript client (@durable-streams/client) against agentgate, run
// by tests/e2e/durable.rs with DURABLE_URL (the route's base URL, e.g.
// http://127.0.0.1:PORT/v1/stream) and DURABLE_KEY (an API key of the gateway).
//
// A small TCP proxy in front of the gateway cuts connections while the test runs:
// - a long-poll reader follows a stream through the proxy while the proxy cuts every
//   connection every few appends, and receives every message exactly once, in order;
// - an SSE reader does the same while the gateway ends each SSE response after
//   [routes.durable] sse_max_ms (300 ms in this test's gateway): the client reconnects from
//   its offset. (The proxy does not cut SSE: client 0.2.7 reconnects an SSE response that
//   ends, but one reset mid-body surfaces as an unhandled "terminated" error and the read
//   stops; README.md, "Durable Streams", notes it);
// - an idempotent producer writes through the proxy, which drops the responses of appends
//   the gateway applied (the worst cut: the write happened, the client cannot know); the
//   producer's fetch retries and the stream holds every message exactly once.
// Nothing here waits a fixed time to decide an outcome: each test waits for its messages,
// bounded by the test timeout.
import net from "node:net";
import { afterEach, describe, expect, test } from "vitest";
import { DurableStream, IdempotentProducer, stream } from "@durable-streams/client";

const base = process.env.DURABLE_URL;
const key = process.env.DURABLE_KEY;
if (!base || !key) throw new Error("DURABLE_URL and DURABLE_KEY are required");
const headers = { Authorization: `Bearer ${key}` };
const target = new URL(base);

/** A TCP proxy to the gateway that can cut its connections. */
class CuttingProxy {
  constructor() {
    this.sockets = new Set();
    this.dropResponses = 0;
    this.dropped = 0;
    this.cuts = 0;
    this.sseRequests = 0;
    this.server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const forget = () => {
        this.sockets.delete(client);
        this.sockets.delete(upstream);
        client.destroy();
        upstream.destroy();
      };
      client.on("error", forget).on("close", forget);
      upstream.on("error", forget).on("close", forget);
      client.on("data", (chunk) => {
        if (chunk.subarray(0, 4).toString() === "GET " && chunk.includes("live=sse")) {
          this.sseRequests++;
        }
        upstream.write(chunk);
      });
      upstream.on("data", (chunk) => {
        // A successful response the client must not see: the append was applied.
        if (this.dropResponses > 0 && chunk.subarray(0, 10).toString() === "HTTP/1.1 2") {
          this.dropResponses--;
          this.dropped++;
          forget();
          return;
        }
        client.write(chunk);
      });
    });
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address();
    return `http://127.0.0.1:${port}${target.pathname}`;
  }

  /** Cuts every open connection. */
  cut() {
    this.cuts++;
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/** Retries a request that failed on the network (never one the server answered). */
function retryingFetch(...args) {
  const attempt = async (left) => {
    try {
      return await fetch(...args);
    } catch (error) {
      if (left === 0) throw error;
      await new Promise((resolve) => setTimeout(resolve, 5));
      return attempt(left - 1);
    }
  };
  return attempt(1000);
}

const proxies = [];
afterEach(async () => {
  while (proxies.length) await proxies.pop().close();
});

async function proxy() {
  const p = new CuttingProxy();
  proxies.push(p);
  return { proxy: p, url: await p.listen() };
}

const unique = (name) => `${name}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

describe("the TypeScript client through connection cuts", () => {
  for (const live of ["long-poll", "sse"]) {
    test(`a ${live} reader gets every message exactly once while connections are cut`, async () => {
      const path = unique(`interop-follow-${live}`);
      const writer = await DurableStream.create({
        url: `${base}/${path}`,
        headers,
        contentType: "application/json",
      });
      const { proxy: cutter, url } = await proxy();
      const total = 120;
      const received = [];
      let resolveAll;
      const all = new Promise((resolve) => (resolveAll = resolve));
      const res = await stream({
        url: `${url}/${path}`,
        headers,
        offset: "-1",
        live,
        backoffOptions: { initialDelay: 5, maxDelay: 50, multiplier: 1.5 },
        sseResilience: { minConnectionDuration: 50 },
      });
      res.subscribeJson((batch) => {
        received.push(...batch.items.map((item) => item.n));
        if (received.length >= total) resolveAll();
      });
      for (let n = 0; n < total; n++) {
        await writer.append(JSON.stringify({ n }));
        if (live === "long-poll" && n % 15 === 7) cutter.cut();
        if (live === "sse" && n % 15 === 7) {
          // Let the gateway end the current SSE response (sse_max_ms) before going on.
          const seen = cutter.sseRequests;
          while (cutter.sseRequests === seen) await new Promise((r) => setTimeout(r, 20));
        }
      }
      await all;
      res.cancel();
      if (live === "long-poll") expect(cutter.cuts).toBeGreaterThan(5);
      else expect(cutter.sseRequests).toBeGreaterThan(5);
      expect(received).toEqual(Array.from({ length: total }, (_, n) => n));
    });
  }

  test("an idempotent producer retries appends whose responses were lost: nothing is duplicated", async () => {
    const path = unique("interop-producer");
    await DurableStream.create({ url: `${base}/${path}`, headers, contentType: "application/json" });
    const { proxy: cutter, url } = await proxy();
    const handle = new DurableStream({ url: `${url}/${path}`, headers, contentType: "application/json" });
    const errors = [];
    const producer = new IdempotentProducer(handle, "interop-producer-1", {
      fetch: retryingFetch,
      lingerMs: 0,
      maxBatchBytes: 64,
      onError: (error) => errors.push(error),
    });
    const total = 200;
    cutter.dropResponses = 25;
    for (let n = 0; n < total; n++) producer.append(JSON.stringify({ n }));
    await producer.flush();
    await producer.close();
    expect(errors).toEqual([]);
    expect(cutter.dropped).toBe(25);
    const res = await stream({ url: `${base}/${path}`, headers, offset: "-1", live: false });
    const items = await res.json();
    expect(items.map((item) => item.n)).toEqual(Array.from({ length: total }, (_, n) => n));
  });
});
