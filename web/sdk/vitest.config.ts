import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    // The machines that run these are shared and often busy: give a slow test room.
    testTimeout: 20_000,
  },
});
