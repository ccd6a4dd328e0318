// Rebuilds the app into a temporary folder and fails when the committed
// dist/ differs from it, so the assets the worker embeds always match the
// sources. `--write` rebuilds dist/ itself instead.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const app = fileURLToPath(new URL("..", import.meta.url));
const dist = join(app, "dist");

function files(root) {
  const out = new Map();
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else out.set(relative(root, path), readFileSync(path));
    }
  };
  try {
    walk(root);
  } catch (error) {
    if (error.code !== "ENOENT") throw error;
  }
  return out;
}

function build(outDir) {
  execFileSync("npx", ["vite", "build", "--logLevel", "warn", "--outDir", outDir, "--emptyOutDir"], {
    cwd: app,
    stdio: "inherit",
  });
}

if (process.argv.includes("--write")) {
  build(dist);
  console.log(`rebuilt ${relative(process.cwd(), dist) || dist}`);
} else {
  const temp = mkdtempSync(join(tmpdir(), "sd-app-dist-"));
  try {
    build(temp);
    const fresh = files(temp);
    const committed = files(dist);
    const problems = [];
    for (const [path, bytes] of fresh) {
      const old = committed.get(path);
      if (!old) problems.push(`missing from dist/: ${path}`);
      else if (!old.equals(bytes)) problems.push(`differs: ${path}`);
    }
    for (const path of committed.keys()) if (!fresh.has(path)) problems.push(`stale in dist/: ${path}`);
    if (problems.length > 0) {
      console.error(`web/app/dist is out of date with the sources:\n  ${problems.join("\n  ")}`);
      console.error("Run `npm run build:dist -w @sd-worker/app` in web/ and commit web/app/dist.");
      process.exitCode = 1;
    } else {
      console.log(`web/app/dist matches a fresh build (${fresh.size} files)`);
    }
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
}
