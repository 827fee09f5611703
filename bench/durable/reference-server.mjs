// The Node reference server (@durable-streams/server, in-memory) for bench/durable.sh, on
// PORT, with a stream at /v1/stream/_health so the bench can see it is up. The package is
// tests/durable's (DURABLE_SERVER_MODULE: the path of its dist/index.js).
const { DurableStreamTestServer } = await import(process.env.DURABLE_SERVER_MODULE);

const server = new DurableStreamTestServer({ port: Number(process.env.PORT), host: "127.0.0.1" });
const url = await server.start();
await fetch(`${url}/v1/stream/_health`, { method: "PUT" });
console.log(`reference server on ${url}`);
