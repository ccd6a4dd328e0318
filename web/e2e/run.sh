#!/usr/bin/env bash
# End-to-end test of the web UI and the SDK against the real worker binary.
#
# Builds the worker (cargo) and the SDK (tsc), starts the worker on a free
# port with an API key, runs the browser tests (playwright-core driving
# Debian's chromium) and the Node SDK test, then stops the worker. The
# session test stops the worker for a moment (SIGSTOP, then SIGCONT) to see
# the page's connection badge follow.
#
# Environment:
#   E2E_ENGINE     real (default): serve the tiny model fixtures/tiny-sd15;
#                  fake: the worker's test engine (gradient images, no model)
#   SD_WORKER_BIN  a prebuilt worker binary (skips cargo build)
#   CHROMIUM       the browser (default /usr/bin/chromium)
#   E2E_TESTS      which of e2e/tests/NAME.test.mjs to run (default "sdk ui session")
#   SCREENSHOTS    where the screenshots go, relative to the repository root
#                  (default web/e2e/out; SCREENSHOTS=docs/screenshots refreshes
#                  the committed ones)
# Needs `npm ci` in web/ first.
set -euo pipefail
web="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$web/.." && pwd)"
engine="${E2E_ENGINE:-real}"

if [[ -z "${SD_WORKER_BIN:-}" ]]; then
  (cd "$root" && cargo build -p sd-worker --bin sd-worker-cpu)
  SD_WORKER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/sd-worker-cpu"
fi
npm run --prefix "$web" build -w @sd-worker/sdk >/dev/null

log="$(mktemp -t sd-e2e-worker.XXXXXX.log)"
key="e2e-$RANDOM$RANDOM"
# Two of the tiny model's LoRA fixtures and its embeddings, for the picker.
loras="$(mktemp -d -t sd-e2e-loras.XXXXXX)"
cp "$root/fixtures/lora/sd15-kohya-locon.safetensors" "$loras/kohya.safetensors"
cp "$root/fixtures/lora/sd15-peft.safetensors" "$loras/peft.safetensors"
args=(--port 0 --worker-id e2e --api-key "$key" --max-queue 4
  --lora-dir "$loras" --embeddings-dir "$root/fixtures/embeddings/sd15")
case "$engine" in
  real) args+=(--model "$root/fixtures/tiny-sd15") ;;
  fake) args+=(--model fixtures/tiny-sd15 --fake-engine "step_ms=150") ;;
  *) echo "E2E_ENGINE must be real or fake, got $engine" >&2; exit 2 ;;
esac

"$SD_WORKER_BIN" "${args[@]}" >"$log" 2>&1 &
worker=$!
stop() {
  if kill -0 "$worker" 2>/dev/null; then
    kill -TERM "$worker" 2>/dev/null || true
    wait "$worker" 2>/dev/null || true
  fi
  rm -f "$log"
  rm -rf "$loras"
}
trap stop EXIT

url=""
for _ in $(seq 1 300); do
  if ! kill -0 "$worker" 2>/dev/null; then
    echo "the worker exited during start-up; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  url="$(grep -o 'listening on http://[0-9.:]*' "$log" | head -n1 | sed 's/listening on //' || true)"
  if [[ -n "$url" ]] && curl -fsS "$url/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
if ! curl -fsS "$url/ready" >/dev/null 2>&1; then
  echo "the worker did not become ready in 60 s; its log:" >&2
  cat "$log" >&2
  exit 1
fi
echo "worker ($engine engine) ready at $url"

shots="${SCREENSHOTS:-web/e2e/out}"
[[ "$shots" = /* ]] || shots="$root/$shots"

status=0
tests=()
for name in ${E2E_TESTS:-sdk ui session}; do tests+=("$web/e2e/tests/$name.test.mjs"); done
SD_WORKER_URL="$url" SD_WORKER_API_KEY="$key" SD_WORKER_PID="$worker" E2E_ENGINE="$engine" \
  SCREENSHOTS="$shots" \
  node --test --test-concurrency=1 "${tests[@]}" || status=$?
if [[ $status -ne 0 ]]; then
  echo "--- worker log (last 40 lines) ---" >&2
  tail -n 40 "$log" >&2
fi
exit $status
