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

. tools/ci/worker.sh
venv="${SCHEMATHESIS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-worker/schemathesis-venv}"
ci_python_venv "$venv" schemathesis==4.32.5
key="schemathesis-$RANDOM$RANDOM"
ci_start_worker --model fixtures/tiny-sd15 --fake-engine step_ms=0 --api-key "$key" --max-queue 10000
base="$CI_WORKER_URL"

hooks_dir="$(pwd)/tools/ci"
# Schemathesis keeps its state in the working directory: not in the repository.
cd "$CI_SCRATCH"
PYTHONPATH="$hooks_dir${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
  "$venv/bin/schemathesis" run "$base/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks all --exclude-checks use_after_free \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-20261205}" \
  --workers 2 --continue-on-failure --no-color
