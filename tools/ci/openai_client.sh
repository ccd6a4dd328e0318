#!/usr/bin/env bash
# The OpenAI Images API through the official `openai` Python client
# (tools/ci/openai_client.py): a worker serving the tiny SD 1.5 folder with
# the real engine (64x64 images, 2 steps), behind an API key that the client
# sends as `Authorization: Bearer`. Run by .ci/run after Schemathesis.
#
# Environment: OPENAI_CLIENT_VENV (where the client is installed, outside
# the repository).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${OPENAI_CLIENT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-worker/openai-client-venv}"
version="3.63.0"
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$version')" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "openai==$version"
fi

cargo build --locked -p sd-worker --bin sd-worker-cpu
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
scratch="$(mktemp -d)"
log="$scratch/worker.log"
key="openai-client-$RANDOM$RANDOM"
model="fixtures/tiny-sd15"
"$target_dir/debug/sd-worker-cpu" --model "$model" --port 0 --api-key "$key" >"$log" 2>&1 &
worker=$!
trap 'kill "$worker" 2>/dev/null || true; rm -rf "$scratch"' EXIT

base=""
for _ in $(seq 1 600); do
  base="$(grep -o 'listening on http://[^ ]*' "$log" | head -n1 | sed 's/listening on //')" || true
  if [ -n "$base" ] && curl -fs "$base/ready" >/dev/null; then
    break
  fi
  sleep 0.1
done
if [ -z "$base" ] || ! curl -fs "$base/ready" >/dev/null; then
  echo "the worker did not become ready:" >&2
  cat "$log" >&2
  exit 1
fi

if ! "$venv/bin/python" tools/ci/openai_client.py "$base" "$key" "$model"; then
  echo "--- worker log" >&2
  cat "$log" >&2
  exit 1
fi
