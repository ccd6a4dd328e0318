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

. tools/ci/worker.sh
venv="${OPENAI_CLIENT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-worker/openai-client-venv}"
ci_python_venv "$venv" openai==3.63.0
key="openai-client-$RANDOM$RANDOM"
model="fixtures/tiny-sd15"
ci_start_worker --model "$model" --api-key "$key"

if ! "$venv/bin/python" tools/ci/openai_client.py "$CI_WORKER_URL" "$key" "$model"; then
  ci_worker_log
  exit 1
fi
