#!/usr/bin/env bash
# Schemathesis against a running worker: every operation of the served
# openapi.json is called with schema-valid and schema-invalid requests, and
# every answer is checked against the document (status codes, content types,
# headers, bodies, SSE events, auth). Run by .ci/run after the Rust tests.
#
# The worker serves the tiny SD 1.5 folder with the fake engine, so requests
# are validated against a real model profile while jobs finish in
# milliseconds. It runs with an API key, which Schemathesis sends, so the
# `ignored_auth` check also proves that a request without the key is refused.
#
# tools/ci/schemathesis_hooks.py puts real pictures into schema-valid image
# requests (a schema cannot say "a base64 image that decodes").
#
# Excluded check, and why:
# - use_after_free: `DELETE /v1/jobs/{id}` cancels a job (the rbee contract);
#   the cancelled job stays readable, as `cancelled`, for its retention period.
#
# Environment: SCHEMATHESIS_VENV (where the tool is installed, outside the
# repository), SCHEMATHESIS_EXAMPLES (examples per operation), SCHEMATHESIS_SEED.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-worker/schemathesis-venv}"
version="4.32.5"
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==$version"
fi

cargo build --locked -p sd-worker --bin sd-worker-cpu
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
scratch="$(mktemp -d)"
log="$scratch/worker.log"
key="schemathesis-$RANDOM$RANDOM"
"$target_dir/debug/sd-worker-cpu" --model fixtures/tiny-sd15 --fake-engine step_ms=0 \
  --port 0 --api-key "$key" --max-queue 10000 >"$log" 2>&1 &
worker=$!
trap 'kill "$worker" 2>/dev/null || true; rm -rf "$scratch"' EXIT

base=""
for _ in $(seq 1 100); do
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

hooks_dir="$(pwd)/tools/ci"
# Schemathesis keeps its state in the working directory: not in the repository.
cd "$scratch"
PYTHONPATH="$hooks_dir${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  "$venv/bin/schemathesis" run "$base/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks all --exclude-checks use_after_free \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-20261205}" \
  --workers 2 --continue-on-failure --no-color
