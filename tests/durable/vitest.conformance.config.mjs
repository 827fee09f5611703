// The conformance suite's own runner file: its published CLI (0.3.6) finds no test files,
// so vitest runs dist/test-runner.js directly; it reads the server from
// CONFORMANCE_TEST_URL. Run by tests/e2e/durable.rs.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js"],
    exclude: [],
    testTimeout: 20000,
    hookTimeout: 20000,
  },
});
