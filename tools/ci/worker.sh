# Shared by the CI scripts that drive a running worker with a Python tool
# (sourced, not run). Each script calls, in order:
#
#   ci_python_venv VENV PACKAGE==VERSION...
#       installs curl and python3-venv when the machine lacks them, then
#       (re)creates VENV, outside the repository, unless it already holds
#       exactly those pinned packages.
#   ci_start_worker ARG...
#       builds sd-worker-cpu, starts it on a free port with ARG... and waits
#       for /ready; sets CI_WORKER_URL, CI_WORKER_LOG and CI_SCRATCH (a
#       scratch folder). On exit the worker is stopped and the folder removed.
#   ci_worker_log
#       prints the end of the worker's log to stderr, for a failing check.

ci_python_venv() {
  local venv="$1"
  shift
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  local installed package
  installed="$("$venv/bin/pip" freeze 2>/dev/null || true)"
  for package in "$@"; do
    if ! grep -qxi "$package" <<<"$installed"; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q "$@"
      return
    fi
  done
}

ci_start_worker() {
  cargo build --locked -p sd-worker --bin sd-worker-cpu
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  CI_SCRATCH="$(mktemp -d)"
  CI_WORKER_LOG="$CI_SCRATCH/worker.log"
  "$target_dir/debug/sd-worker-cpu" --port 0 "$@" >"$CI_WORKER_LOG" 2>&1 &
  CI_WORKER_PID=$!
  trap 'kill "$CI_WORKER_PID" 2>/dev/null || true; rm -rf "$CI_SCRATCH"' EXIT

  CI_WORKER_URL=""
  local _
  for _ in $(seq 1 600); do
    CI_WORKER_URL="$(grep -o 'listening on http://[^ ]*' "$CI_WORKER_LOG" | head -n1 \
      | sed 's/listening on //')" || true
    if [ -n "$CI_WORKER_URL" ] && curl -fs "$CI_WORKER_URL/ready" >/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "the worker did not become ready:" >&2
  cat "$CI_WORKER_LOG" >&2
  exit 1
}

ci_worker_log() {
  echo "--- worker log" >&2
  tail -n 50 "$CI_WORKER_LOG" >&2
}
