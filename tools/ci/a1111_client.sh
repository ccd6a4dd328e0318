#!/usr/bin/env bash
# The AUTOMATIC1111 API (`/sdapi/v1/...`) against a real A1111 client: the
# `webuiapi` Python package (what many scripts and bots use) drives a worker
# that serves the tiny SD 1.5 folder with the real engine. Run by .ci/run
# after Schemathesis; tools/ci/a1111_client.py holds the checks.
#
# Environment: A1111_VENV (where the client is installed, outside the
# repository).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${A1111_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-worker/a1111-venv}"
# webuiapi and the versions of its dependencies this script was checked with.
packages=(webuiapi==0.9.17 requests==2.34.2 pillow==13.0.0)
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! "$venv/bin/python" -c 'import webuiapi' 2>/dev/null \
  || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qx "${packages[0]}"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${packages[@]}"
fi

cargo build --locked -p sd-worker --bin sd-worker-cpu
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
scratch="$(mktemp -d)"
log="$scratch/worker.log"
"$target_dir/debug/sd-worker-cpu" --model fixtures/tiny-sd15 --port 0 >"$log" 2>&1 &
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

if ! "$venv/bin/python" tools/ci/a1111_client.py "$base"; then
  echo "--- worker log ---" >&2
  tail -n 50 "$log" >&2
  exit 1
fi
