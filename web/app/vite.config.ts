import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

const sdk = fileURLToPath(new URL("../sdk/src/index.ts", import.meta.url));

// The build is committed in dist/ and embedded in the worker binary, so it
// must be reproducible: content-hashed names, no source maps, no timestamps.
export default defineConfig({
  plugins: [react()],
  base: "/",
  resolve: {
    alias: { "@sd-worker/sdk": sdk },
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "/v1": process.env.SD_WORKER_URL ?? "http://127.0.0.1:8080",
      "/health": process.env.SD_WORKER_URL ?? "http://127.0.0.1:8080",
      "/ready": process.env.SD_WORKER_URL ?? "http://127.0.0.1:8080",
    },
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.{ts,tsx}"],
    setupFiles: ["test/setup.ts"],
    // The machines that run these are shared and often busy: give a slow render room.
    testTimeout: 20_000,
  },
});
