// The client interop tests (interop.test.mjs). Run by tests/e2e/durable.rs.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["interop.test.mjs"],
    testTimeout: 60000,
  },
});
