// Load program of bench/durable.sh: drives one Durable Streams server (URL = its stream
// base, e.g. http://127.0.0.1:PORT/v1/stream) with plain HTTP (node's http module, no
// client library: the same requests for every server) and prints one line of results.
//
//   node load.mjs appends URL PRODUCERS SECONDS BODY_BYTES
//       PRODUCERS concurrent writers, each appending to its own stream, one request in
//       flight each, for SECONDS -> "appends_per_s=.. p50_ms=.. p99_ms=.. errors=.."
//   node load.mjs fanout URL READERS MESSAGES RATE
//       READERS live SSE readers of one stream; MESSAGES appends at RATE/s carrying their
//       send time -> "connected=.. delivered=.. expected=.. p50_ms=.. p99_ms=.. max_ms=.."
//   node load.mjs catchup URL MESSAGES BODY_BYTES READERS
//       one stream of MESSAGES appends, then READERS concurrent catch-up reads from -1 to
//       the tail, following Stream-Next-Offset -> "mb_per_s=.. reads_per_s=.. seconds=.."
//
// Every request carries AUTH (env DURABLE_AUTH, e.g. "Bearer KEY") when set.
import http from "node:http";

const [mode, base, ...args] = process.argv.slice(2);
const auth = process.env.DURABLE_AUTH;
const agent = new http.Agent({ keepAlive: true, maxSockets: 100000 });

function request(method, url, { body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    if (auth) h.authorization = auth;
    if (body !== undefined) h["content-length"] = Buffer.byteLength(body);
    const req = http.request(url, { method, agent, headers: h }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const percentile = (sorted, p) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
const ms = (n) => n.toFixed(2);
const run = `${Date.now()}-${process.pid}`;

async function create(path, contentType = "application/octet-stream") {
  const res = await request("PUT", `${base}/${path}`, { headers: { "content-type": contentType } });
  if (res.status !== 201 && res.status !== 200) throw new Error(`PUT ${path}: ${res.status} ${res.body}`);
}

async function appends(producers, seconds, bodyBytes) {
  const body = "x".repeat(bodyBytes);
  const paths = Array.from({ length: producers }, (_, i) => `bench-append-${run}-${i}`);
  await Promise.all(paths.map((p) => create(p)));
  const latencies = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    paths.map(async (path) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          const res = await request("POST", `${base}/${path}`, {
            body,
            headers: { "content-type": "application/octet-stream" },
          });
          if (res.status !== 204) errors++;
        } catch {
          errors++;
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  console.log(
    `appends_per_s=${(latencies.length / seconds).toFixed(0)} p50_ms=${ms(percentile(latencies, 50))} ` +
      `p99_ms=${ms(percentile(latencies, 99))} errors=${errors}`,
  );
}

async function fanout(readers, messages, rate) {
  const path = `bench-fanout-${run}`;
  await create(path, "text/plain");
  const latencies = [];
  let connected = 0;
  let delivered = 0;
  const sockets = [];
  await new Promise((resolveAll, rejectAll) => {
    for (let i = 0; i < readers; i++) {
      const headers = auth ? { authorization: auth } : {};
      const req = http.get(`${base}/${path}?offset=now&live=sse`, { agent, headers }, (res) => {
        if (res.statusCode !== 200) return rejectAll(new Error(`SSE: ${res.statusCode}`));
        sockets.push(res);
        res.setEncoding("utf8");
        let buffer = "";
        res.on("data", (chunk) => {
          buffer += chunk;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const event = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            if (event.startsWith("event: data") || event.startsWith("event:data")) {
              const data = event.split("\n").find((l) => l.startsWith("data:"));
              const sent = Number(data.slice(5).trim());
              latencies.push(Date.now() - sent);
              delivered++;
            }
          }
        });
        if (++connected === readers) resolveAll();
      });
      req.on("error", rejectAll);
    }
  });
  const gap = 1000 / rate;
  for (let n = 0; n < messages; n++) {
    await request("POST", `${base}/${path}`, {
      body: String(Date.now()),
      headers: { "content-type": "text/plain" },
    });
    await new Promise((r) => setTimeout(r, gap));
  }
  const expected = readers * messages;
  const deadline = Date.now() + 20000;
  while (delivered < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const s of sockets) s.destroy();
  latencies.sort((a, b) => a - b);
  console.log(
    `connected=${connected} delivered=${delivered} expected=${expected} p50_ms=${ms(percentile(latencies, 50))} ` +
      `p99_ms=${ms(percentile(latencies, 99))} max_ms=${ms(latencies.at(-1) ?? NaN)}`,
  );
}

async function catchup(messages, bodyBytes, readers) {
  const path = `bench-catchup-${run}`;
  await create(path);
  const body = "y".repeat(bodyBytes);
  for (let n = 0; n < messages; n++) {
    const res = await request("POST", `${base}/${path}`, { body, headers: { "content-type": "application/octet-stream" } });
    if (res.status !== 204) throw new Error(`POST: ${res.status}`);
  }
  let bytes = 0;
  let reads = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: readers }, async () => {
      let offset = "-1";
      for (;;) {
        const res = await request("GET", `${base}/${path}?offset=${offset}`);
        if (res.status !== 200) throw new Error(`GET: ${res.status}`);
        reads++;
        bytes += res.body.length;
        offset = res.headers["stream-next-offset"];
        if (res.headers["stream-up-to-date"] === "true") break;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const expected = readers * messages * bodyBytes;
  console.log(
    `mb_per_s=${(bytes / 1e6 / seconds).toFixed(1)} reads_per_s=${(reads / seconds).toFixed(0)} ` +
      `seconds=${seconds.toFixed(2)} bytes=${bytes} expected=${expected}`,
  );
}

const n = args.map(Number);
if (mode === "appends") await appends(n[0], n[1], n[2]);
else if (mode === "fanout") await fanout(n[0], n[1], n[2]);
else if (mode === "catchup") await catchup(n[0], n[1], n[2]);
else throw new Error(`unknown mode ${mode}`);
agent.destroy();
process.exit(0);
