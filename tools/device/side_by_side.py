#!/usr/bin/env python3
"""The side-by-side records and table of tools/device/cuda_check.sh (ours vs diffusers fp16 + SDPA).

  side_by_side.py record ours FILE PEAK_MIB       one record from `bench --json` lines in FILE
  side_by_side.py record diffusers FILE PEAK_MIB  one record from diffusers_gpu.py's line in FILE
  side_by_side.py table RECORDS.jsonl             the table, one row per workload

PEAK_MIB is the most GPU memory nvidia-smi saw in use while the process ran (the CUDA context and any
allocator cache included), the one figure both sides have; diffusers also reports
torch.cuda.max_memory_allocated (tensors only).
"""

import json
import sys


def last_json(path):
    lines = [line for line in open(path) if line.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"no JSON line in {path}")
    return json.loads(lines[-1])


def record(side, path, peak):
    peak = None if peak in ("", "?", "null") else float(peak)
    figure = last_json(path)
    if side == "ours":
        out = {
            "side": "ours", "model": figure["model"], "size": figure["size"], "steps": figure.get("steps"),
            "batch": figure["batch"], "median_s": figure["median_s"], "min_s": figure["min_s"],
            "reps": figure["reps"], "finite": figure.get("finite"), "stages": figure.get("stages"),
            "gpu_peak_mib": peak,
        }
    else:
        out = dict(figure, gpu_peak_mib=peak)
    print(json.dumps(out))


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(path):
    rows = {}
    for line in open(path):
        if line.strip().startswith("{"):
            r = json.loads(line)
            rows.setdefault((r["model"], r["size"], r.get("steps")), {})[r["side"]] = r
    print("| workload | ours s | diffusers s | ours/diffusers | ours GPU peak MiB (nvidia-smi) "
          "| diffusers GPU peak MiB (nvidia-smi) | diffusers max_allocated MiB | ours/diffusers memory |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (model, size, steps), sides in rows.items():
        ours, theirs = sides.get("ours", {}), sides.get("diffusers", {})
        guided = "guided" if (ours.get("batch") or theirs.get("batch") or 1) > 1 else "unguided"
        ratio = (ours["median_s"] / theirs["median_s"]) if ours.get("median_s") and theirs.get("median_s") else None
        mem = (ours["gpu_peak_mib"] / theirs["gpu_peak_mib"]
               if ours.get("gpu_peak_mib") and theirs.get("gpu_peak_mib") else None)
        print(f"| {model} {size}² {steps} steps {guided} | {fmt(ours.get('median_s'), '.3f')} "
              f"| {fmt(theirs.get('median_s'), '.3f')} | {fmt(ratio, '.2f')} | {fmt(ours.get('gpu_peak_mib'), '.0f')} "
              f"| {fmt(theirs.get('gpu_peak_mib'), '.0f')} | {fmt(theirs.get('max_allocated_mib'), '.0f')} "
              f"| {fmt(mem, '.2f')} |")


def main():
    if sys.argv[1:2] == ["record"] and len(sys.argv) == 5:
        record(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["table"] and len(sys.argv) == 3:
        table(sys.argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
