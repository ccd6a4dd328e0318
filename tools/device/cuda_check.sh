#!/usr/bin/env bash
# End-to-end check of sd-worker-cuda on a GPU machine that has no Rust toolchain.
#
# What it checks, each step timed and kept going after a failure:
#   a. the GPU, the binary's shared libraries (ldd), with LD_LIBRARY_PATH pointed
#      at the NVIDIA pip wheels (cuBLAS, cuRAND, NVRTC, cudart 13) and system CUDA;
#   b. `generate` on the tiny fixture pipelines (tiny-sd15, tiny-sdxl), compared
#      with the committed diffusers traces (max|Δ| of embeddings, latents, image):
#      in f32 against the f32 traces, then computing in f16 (the CUDA default)
#      against diffusers' fp16 traces (tools/fixtures/make_half_references.py)
#      with the tolerances of crates/core/tests/pipeline_parity.rs;
#   c. the HTTP server at its defaults (f16 on CUDA): /ready, /v1/info (what
#      computes in what), a job through POST /v1/jobs, its SSE stream to [DONE],
#      the result PNG (compared with the f32 generate PNG), then SIGTERM;
#   d. side by side with diffusers fp16 + SDPA (tools/device/diffusers_gpu.py,
#      random full-size weights on both sides): SD 1.5 512² 20 steps guided,
#      SD-Turbo 512² 1 step, SDXL 1024² 30 steps guided; each side's median
#      time and the peak GPU memory nvidia-smi saw (diffusers also reports
#      torch.cuda.max_memory_allocated), printed as one table
#      (tools/device/side_by_side.py). diffusers comes from the machine's python
#      or, when it has none, from wheels in .whl/ (diffusers, importlib_metadata);
#   e. with F32_BENCH=1, the f32 figures of the earlier check (SD 1.5 UNet 512²
#      batch 2, VAE decode 512², 20-step SD 1.5, 1-step SD-Turbo, 1-step SDXL).
#
# Run from the repository root, with the compressed binary at
# .device/sd-worker-cuda.xz (or .zst, or uncompressed .device/sd-worker-cuda):
#   bash tools/device/cuda_check.sh
# Results go to $OUT (./cuda-check-out when unset): cuda_check.log, bench.jsonl,
# side_by_side.jsonl, side_by_side.md, summary.json and the PNGs. BIN=path runs
# another binary (sd-worker-cpu tests the script itself without a GPU);
# SKIP_BENCH=1 leaves out steps d and e; MODELS=sd15,sd-turbo,sdxl picks step
# d's workloads; PYTHON picks the interpreter (numpy, safetensors and pillow
# needed for the comparisons).

set -u
OUT=${OUT:-$PWD/cuda-check-out}
mkdir -p "$OUT"
LOG=$OUT/cuda_check.log
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/cuda-check.XXXXXX)
PORT=${PORT:-18080}
SUMMARY=$WORK/summary.jsonl
START=$(date +%s.%N)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# note KEY JSON-VALUE: one summary entry.
note() { printf '{"%s": %s}\n' "$1" "$2" >>"$SUMMARY"; }
# step NAME FUNCTION: runs it, prints its status and duration, never stops the script.
step() {
    local name=$1 t
    shift
    t=$(now)
    echo
    echo "=== [$name] start at +$(since "$START")s"
    "$@"
    local rc=$?
    echo "=== [$name] rc=$rc in $(since "$t")s"
    note "step_$name" "{\"rc\": $rc, \"seconds\": $(since "$t")}"
}

# --- a. GPU, binary, libraries -------------------------------------------------
setup() {
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
    if [ -n "${BIN:-}" ]; then
        EXE=$BIN
    elif [ -f .device/sd-worker-cuda.xz ]; then
        EXE=$WORK/sd-worker-cuda
        xz -dc .device/sd-worker-cuda.xz >"$EXE" 2>/dev/null ||
            "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                .device/sd-worker-cuda.xz "$EXE"
    elif [ -f .device/sd-worker-cuda.zst ]; then
        EXE=$WORK/sd-worker-cuda
        zstd -dqc .device/sd-worker-cuda.zst >"$EXE"
    else
        EXE=.device/sd-worker-cuda
    fi
    chmod +x "$EXE" 2>/dev/null
    ls -l "$EXE"
    # The wheels' lib folders (nvidia/cu13/lib, or nvidia/<lib>/lib in older
    # layouts), then system CUDA as a fallback.
    local dirs
    dirs=$("$PY" -c '
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
seen = []
for root in roots:
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))) + sorted(glob.glob(os.path.join(root, "*", "lib64"))):
        if d not in seen:
            seen.append(d)
print(":".join(seen))')
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && dirs=${dirs:+$dirs:}$d
    done
    export LD_LIBRARY_PATH=$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldd "$EXE"
    ! ldd "$EXE" | grep -q 'not found'
    local rc=$?
    "$EXE" --version
    return $rc
}

# --- b. generate vs diffusers ------------------------------------------------------
# gen DTYPE FIXTURE TRACES CASE: runs one case of fixtures/traces/TRACES/cases.json
# computing in DTYPE (f32 or f16) and compares its trace with diffusers'.
gen() {
    local dtype=$1 fixture=$2 traces=fixtures/traces/$3 case=$4 args rc label
    label=$fixture-$dtype
    args=$("$PY" - "$traces/cases.json" "$case" <<'EOF'
import json, shlex, sys
c = next(c for c in json.load(open(sys.argv[1])) if c["name"] == sys.argv[2])
a = ["--prompt", c["prompt"], "--steps", str(c["steps"]),
     "--guidance-scale", str(c["guidance_scale"]), "--width", str(c["width"]),
     "--height", str(c["height"]), "--seed", str(c["seed"])]
if c.get("scheduler") is not None:
    a += ["--scheduler", c["scheduler"]]
if c.get("negative_prompt") is not None:
    a += ["--negative-prompt", c["negative_prompt"]]
if c.get("init_latents"):
    a += ["--init-latents", f"{sys.argv[1].rsplit('/', 1)[0]}/{c['name']}.init.safetensors"]
print(shlex.join(a))
EOF
    ) || return 1
    eval "set -- $args"
    echo "generate --model fixtures/$fixture --dtype $dtype --compute-dtype $dtype $*"
    timeout 120 "$EXE" generate --model "fixtures/$fixture" --dtype "$dtype" --compute-dtype "$dtype" "$@" \
        --output "$OUT/generate_$label.png" --trace "$WORK/$label.trace.safetensors"
    rc=$?
    [ $rc -eq 0 ] || return $rc
    "$PY" - "$traces/$case.safetensors" "$WORK/$label.trace.safetensors" "$label/$case" "$dtype" <<'EOF' >>"$SUMMARY"
import json, sys
import numpy as np
from safetensors.numpy import load_file
ref, ours, label = load_file(sys.argv[1]), load_file(sys.argv[2]), sys.argv[3]
# Tolerances of crates/core/tests/pipeline_parity.rs: f32 (tiny_*_matches_diffusers)
# and f16 (tiny_half_compute_matches_diffusers_in_half).
embeds, latents, image = {"f32": (1e-3, 1e-3, 5e-3), "f16": (1e-2, 6e-3, 8e-3)}[sys.argv[4]]
tol = {"prompt_embeds": embeds, "negative_prompt_embeds": embeds, "pooled_prompt_embeds": embeds,
       "negative_pooled_prompt_embeds": embeds, "add_time_ids": 0.0, "image": image,
       "latents_final": latents * float(np.abs(ref["latents_final"]).max())}
result, ok = {}, True
for key, t in tol.items():
    if key not in ref:
        continue
    if key not in ours:
        print(f"{label}: {key} missing from our trace", file=sys.stderr); ok = False; continue
    a, b = ours[key].astype(np.float64), ref[key].astype(np.float64)
    if a.shape != b.shape:
        print(f"{label}: {key} shape {a.shape} vs reference {b.shape}", file=sys.stderr); ok = False; continue
    d = float(np.abs(a - b).max())
    good = d <= t
    ok &= good
    result[key] = d
    print(f"{label}: {key:30s} max|d| = {d:.3e} (tolerance {t:.1e}) {'ok' if good else 'FAIL'}",
          file=sys.stderr)
print(f"{label}: {'PASS' if ok else 'FAIL'}", file=sys.stderr)
print(json.dumps({f"parity_{label}": {"pass": ok, "max_abs_diff": result}}))
sys.exit(0 if ok else 1)
EOF
}

# --- c. the HTTP server ----------------------------------------------------------
server() {
    local base=http://127.0.0.1:$PORT pid id rc=0 t
    RUST_LOG=info "$EXE" --model fixtures/tiny-sd15 --port "$PORT" >"$WORK/server.log" 2>&1 &
    pid=$!
    t=$(now)
    for _ in $(seq 1 240); do
        curl -sf "$base/ready" >/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    echo "ready after $(since "$t")s: $(curl -s "$base/ready")"
    curl -s "$base/v1/info"
    echo
    # The euler_a_128 case of the tiny-sd15 traces, as the generate step ran it.
    "$PY" - fixtures/traces/tiny-sd15/cases.json euler_a_128 >"$WORK/job-request.json" <<'EOF'
import json, sys
c = next(c for c in json.load(open(sys.argv[1])) if c["name"] == sys.argv[2])
keys = ["prompt", "negative_prompt", "steps", "guidance_scale", "width", "height", "seed", "scheduler"]
print(json.dumps({"operation": "image_generation", **{k: c[k] for k in keys}}))
EOF
    cat "$WORK/job-request.json"
    id=$(curl -s -X POST "$base/v1/jobs" -H 'content-type: application/json' \
        -d @"$WORK/job-request.json" | tee /dev/stderr |
        "$PY" -c 'import json, sys; print(json.load(sys.stdin)["job_id"])') || rc=1
    echo
    if [ -n "$id" ]; then
        timeout 120 curl -sN "$base/v1/jobs/$id/stream" >"$WORK/stream.txt"
        grep '^data:' "$WORK/stream.txt" | grep -v '"type":"progress"' | cut -c1-300
        grep -q '^data: \[DONE\]' "$WORK/stream.txt" || { echo "stream did not end with [DONE]"; rc=1; }
        echo "progress events: $(grep -c '"type":"progress"' "$WORK/stream.txt")"
        curl -s "$base/v1/jobs/$id" >"$WORK/job.json"
        "$PY" - "$WORK/job.json" "$OUT/server_tiny-sd15.png" "$OUT/generate_tiny-sd15-f32.png" <<'EOF' >>"$SUMMARY" || rc=1
import base64, io, json, os, sys
import numpy as np
from PIL import Image
job = json.load(open(sys.argv[1]))
print(f"state {job['state']}, timings {job.get('result', {}) and job['result']['timings']}", file=sys.stderr)
png = base64.b64decode(job["result"]["image"])
open(sys.argv[2], "wb").write(png)
ours = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
diff = None
if os.path.exists(sys.argv[3]):
    gen = np.asarray(Image.open(sys.argv[3]).convert("RGB"), dtype=np.int16)
    diff = int(np.abs(ours - gen).max()) if gen.shape == ours.shape else -1
print(f"server PNG {ours.shape}, max|d| vs generate PNG (0-255): {diff}", file=sys.stderr)
print(json.dumps({"server": {"state": job["state"], "timings": job["result"]["timings"], "max_abs_diff_vs_generate": diff}}))
sys.exit(0 if job["state"] == "completed" else 1)
EOF
    fi
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "server still up 10 s after SIGTERM; killing it"
        kill -KILL "$pid"
        rc=1
    fi
    wait "$pid"
    echo "server exit status $? (after SIGTERM)"
    echo "--- server log (tail)"
    tail -n 25 "$WORK/server.log"
    return $rc
}

# --- d. side by side with diffusers, and e. f32 figures ----------------------------
# watch_gpu / peak_gpu: sample nvidia-smi's memory in use every 200 ms, then the peak.
watch_gpu() {
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$WORK/mem.txt" 2>/dev/null &
    MON=$!
}
peak_gpu() {
    kill "$MON" 2>/dev/null
    wait "$MON" 2>/dev/null
    sort -n "$WORK/mem.txt" | tail -n 1
}

# bench LIMIT_S BENCH-ARGS...: one bench command, its JSON lines into bench.jsonl,
# the peak GPU memory it used into the summary.
bench() {
    local limit=$1 rc peak
    shift
    echo "bench $*"
    watch_gpu
    timeout "$limit" "$EXE" bench --json "$@" | tee -a "$OUT/bench.jsonl"
    rc=${PIPESTATUS[0]}
    peak=$(peak_gpu)
    echo "peak GPU memory used: ${peak:-?} MiB"
    note "gpu_peak_mib $*" "${peak:-null}"
    return $rc
}

# diffusers_ready: diffusers importable, from the machine's python or from the
# wheels carried in .whl/.
diffusers_ready() {
    "$PY" -c 'import diffusers' 2>/dev/null && return 0
    ls .whl/*.whl >/dev/null 2>&1 || { echo "no diffusers and no .whl/ wheels"; return 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" .whl/*.whl || return 1
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
    "$PY" -c 'import diffusers; print("diffusers", diffusers.__version__, "from .whl/")'
}

# side MODEL SIZE STEPS GUIDANCE REPS LIMIT_S: one workload, ours (the binary's
# defaults: f16 on CUDA) then diffusers fp16, each with its GPU memory peak.
side() {
    local model=$1 size=$2 steps=$3 guidance=$4 reps=$5 limit=$6 rc=0 peak
    echo "ours: bench --models $model --components image --sizes $size --steps $steps --guidance-scale $guidance"
    watch_gpu
    timeout "$limit" "$EXE" bench --json --models "$model" --components image --sizes "$size" \
        --steps "$steps" --guidance-scale "$guidance" --reps "$reps" --warmup 1 | tee "$WORK/ours.json"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    peak=$(peak_gpu)
    echo "ours: peak GPU memory ${peak:-?} MiB"
    "$PY" tools/device/side_by_side.py record ours "$WORK/ours.json" "${peak:-?}" >>"$OUT/side_by_side.jsonl" || rc=1
    echo "diffusers: $model ${size}px $steps steps, guidance $guidance"
    watch_gpu
    timeout "$limit" "$PY" tools/device/diffusers_gpu.py --model "$model" --size "$size" --steps "$steps" \
        --guidance-scale "$guidance" --reps "$reps" | tee "$WORK/diffusers.json"
    [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
    peak=$(peak_gpu)
    echo "diffusers: peak GPU memory ${peak:-?} MiB"
    "$PY" tools/device/side_by_side.py record diffusers "$WORK/diffusers.json" "${peak:-?}" \
        >>"$OUT/side_by_side.jsonl" || rc=1
    return $rc
}

# wants MODEL: whether MODELS (default all three) names it.
wants() { case ",${MODELS:-sd15,sd-turbo,sdxl}," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

step setup setup
step generate_sd15_f32 gen f32 tiny-sd15 tiny-sd15 euler_a_128
step generate_sdxl_f32 gen f32 tiny-sdxl tiny-sdxl euler_a_64x96
step generate_sd15_f16 gen f16 tiny-sd15 tiny-sd15-f16 pndm_64
step generate_sdxl_f16 gen f16 tiny-sdxl tiny-sdxl-f16 euler_64
step server server
if [ -z "${SKIP_BENCH:-}" ]; then
    : >"$OUT/side_by_side.jsonl"
    step diffusers_ready diffusers_ready
    if wants sd15; then step side_sd15 side sd15 512 20 7.5 3 150; fi
    if wants sd-turbo; then step side_sd_turbo side sd-turbo 512 1 0 5 90; fi
    if wants sdxl; then step side_sdxl side sdxl 1024 30 5.0 2 240; fi
    echo
    echo "=== side by side (median seconds per image; GPU memory peaks)"
    "$PY" tools/device/side_by_side.py table "$OUT/side_by_side.jsonl" | tee "$OUT/side_by_side.md"
    if [ -n "${F32_BENCH:-}" ]; then
        step bench_sd15_f32 bench 150 --dtype f32 --models sd15 --components unet,vae-decode,image \
            --sizes 512 --batches 2 --steps 20 --reps 3 --warmup 1
        step bench_sd_turbo_f32 bench 90 --dtype f32 --models sd-turbo --components image --sizes 512 \
            --reps 3 --warmup 1
        step bench_sdxl_f32 bench 180 --dtype f32 --models sdxl --components image --sizes 1024 \
            --steps 1 --reps 2 --warmup 1
    fi
fi

"$PY" - "$SUMMARY" "$OUT/summary.json" <<'EOF'
import json, sys
out = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        out.update(json.loads(line))
json.dump(out, open(sys.argv[2], "w"), indent=1)
EOF
echo
echo "=== summary ($(since "$START")s in all)"
cat "$OUT/summary.json" 2>/dev/null || cat "$SUMMARY"
echo
[ -f "$OUT/bench.jsonl" ] && cat "$OUT/bench.jsonl"
rm -rf "$WORK"
sleep 1 # let tee write the end of the log
