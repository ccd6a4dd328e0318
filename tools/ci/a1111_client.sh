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

. tools/ci/worker.sh
venv="${A1111_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sd-worker/a1111-venv}"
# webuiapi and the versions of its dependencies this script was checked with.
ci_python_venv "$venv" webuiapi==0.9.17 requests==2.34.2 pillow==13.0.0
ci_start_worker --model fixtures/tiny-sd15

if ! "$venv/bin/python" tools/ci/a1111_client.py "$CI_WORKER_URL"; then
  ci_worker_log
  exit 1
fi
