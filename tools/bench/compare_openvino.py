#!/usr/bin/env python3
"""Time sd-worker against OpenVINO on the same random weights, inputs and machine.

The weights are the benchmark's deterministic random weights as a diffusers
folder (written by `sd-worker-cpu bench --save-weights` when missing, as
`compare_diffusers.py` does). OpenVINO gets the diffusers modules through
`openvino.convert_model` and runs them on the CPU plugin twice: with its
default precision (bf16 on CPUs with AVX512-BF16 or AMX, as reported by
`INFERENCE_PRECISION_HINT`) and with f32 forced. The Rust side runs
`sd-worker-cpu bench` with `--dtype f32` and `--dtype bf16`. Every side
runs in its own process and reports the fastest and the median of `--reps`
timed runs after `--warmup`; the inputs are the ones the Rust side dumped, so
the outputs are compared too (max|diff| against ours in f32).

    python tools/bench/compare_openvino.py --model sd15 \
        --figures unet:256:2,unet:512:2,vae-decode:512 --reps 3

Needs `openvino` (pip) next to torch and diffusers in the Python environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_diffusers as cd  # noqa: E402  (the shared weights, dumps and helpers)

PRECISIONS = ("default", "f32")


def run_rust(args, component, size, batch, dump_dir, dtype: str) -> dict:
    cmd = [
        str(args.bin), "bench", "--json", "--models", args.model, "--components", component,
        "--sizes", str(max(size, 8)), "--batches", str(batch), "--reps", str(args.reps),
        "--warmup", str(args.warmup), "--weights", str(args.weights_dir), "--dump", str(dump_dir),
        "--threads", str(args.threads), "--seed", str(args.seed), "--dtype", dtype,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def run_openvino(args, component, size, batch, dump_dir, precision: str) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child", "--model", args.model,
        "--weights-dir", str(args.weights_dir), "--figures", f"{component}:{size}:{batch}",
        "--reps", str(args.reps), "--warmup", str(args.warmup), "--threads", str(args.threads),
        "--dump-dir", str(dump_dir), "--seed", str(args.seed), "--precision", precision,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"compare_openvino: the OpenVINO run of {component} {size} ({precision}) failed")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def driver(args) -> None:
    if not (args.weights_dir / "unet" / "diffusion_pytorch_model.safetensors").exists():
        print(f"writing random {args.model} weights to {args.weights_dir}", file=sys.stderr)
        subprocess.run(
            [str(args.bin), "bench", "--models", args.model, "--save-weights", str(args.weights_dir),
             "--seed", str(args.seed)],
            check=True,
        )
    dump_dir = args.weights_dir / "dumps"
    dump_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"model {args.model}, {args.threads} threads, fastest of {args.reps} reps (warmup {args.warmup}); "
        "ratio = ours / OpenVINO at the same precision"
    )
    print(
        f"{'figure':<16} {'ours_f32':>9} {'ours_bf16':>9} {'ov_f32':>9} {'ov_default':>10} {'(prec)':>7} "
        f"{'f32_ratio':>9} {'bf16_ratio':>10} {'ours_MiB':>9} {'ov_MiB':>7} {'max|diff|':>9}"
    )
    for text in args.figures.split(","):
        component, size, batch = cd.parse_figure(text)
        # Ours in f32 first: its dump is the inputs and reference output.
        ours = {d: run_rust(args, component, size, batch, dump_dir, d) for d in ("f32", "bf16")}
        # The bf16 run rewrote the dump's output; the f32 run restores it.
        ours["f32"] = run_rust(args, component, size, batch, dump_dir, "f32")
        ov = {p: run_openvino(args, component, size, batch, dump_dir, p) for p in PRECISIONS}
        name = f"{component} {size}" + (f" b{batch}" if component == "unet" else "")
        print(
            f"{name:<16} {ours['f32']['min_s']:>9.3f} {ours['bf16']['min_s']:>9.3f} "
            f"{ov['f32']['min_s']:>9.3f} {ov['default']['min_s']:>10.3f} {ov['default']['precision']:>7} "
            f"{ours['f32']['min_s'] / ov['f32']['min_s']:>9.2f} "
            f"{ours['bf16']['min_s'] / ov['default']['min_s']:>10.2f} "
            f"{ours['f32']['run_peak_mib']:>9.0f} {ov['default']['run_peak_mib']:>7.0f} "
            f"{ov['default']['max_abs_diff']:>9.2e}",
            flush=True,
        )
        for side, result in [*(("ours " + d, r) for d, r in ours.items()), *(("openvino " + p, r) for p, r in ov.items())]:
            print(
                f"    {side:<17} min {result['min_s']:.3f}s median {result['median_s']:.3f}s "
                f"peak {result['run_peak_mib']:.0f} MiB" + (f" ({result['precision']})" if "precision" in result else ""),
                file=sys.stderr,
            )


def precision_name(hint: str) -> str:
    """`f32`, `bf16`, `f16` from OpenVINO's printed element type (e.g. `<Type: 'float32'>`)."""
    for name, short in (("bfloat16", "bf16"), ("float16", "f16"), ("float32", "f32"), ("bf16", "bf16"), ("f16", "f16"), ("f32", "f32")):
        if name in hint.lower():
            return short
    return hint


def child(args) -> None:
    import numpy as np
    import openvino as ov
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    component, size, batch = cd.parse_figure(args.figures)
    dump = load_file(str(args.dump_dir / cd.dump_name(args.model, component, size, batch)))
    models = cd.load_models(args.model, component, args.weights_dir, torch.float32)
    if component == "unet":
        class Step(torch.nn.Module):
            def __init__(self, unet):
                super().__init__()
                self.unet = unet

            def forward(self, sample, timestep, context):
                return self.unet(sample, timestep, encoder_hidden_states=context).sample

        module = Step(models["unet"])
        inputs = (dump["sample"], torch.tensor([cd.TIMESTEP]), dump["encoder_hidden_states"])
    elif component == "vae-decode":
        class Decode(torch.nn.Module):
            def __init__(self, vae):
                super().__init__()
                self.vae = vae

            def forward(self, z):
                return self.vae.decode(z).sample

        module = Decode(models["vae"])
        inputs = (dump["latents"],)
    else:
        raise SystemExit(f"compare_openvino: {component} is not supported (unet, vae-decode)")

    # The modules are wrapped as submodules, so tracing sees their weights as
    # parameters; frozen, since a traced constant must not require grad.
    module.requires_grad_(False).eval()
    with torch.no_grad():
        converted = ov.convert_model(module, example_input=inputs)
    del models, module
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": args.threads}
    if args.precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    cd.reset_peak()
    compiled = core.compile_model(converted, "CPU", config)
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    request = compiled.create_infer_request()
    feed = [x.numpy() for x in inputs]
    for _ in range(args.warmup):
        request.infer(feed)
    cd.reset_peak()
    times = []
    for _ in range(args.reps):
        started = time.perf_counter()
        request.infer(feed)
        times.append(time.perf_counter() - started)
    run_peak = cd.peak_mib()
    out = request.get_output_tensor(0).data
    reference = dump.get("out")
    diff = float(np.abs(out - reference.numpy()).max()) if reference is not None else None
    print(json.dumps({
        "component": component, "size": size, "batch": batch, "reps": args.reps,
        "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
        "run_peak_mib": run_peak, "precision": precision_name(precision),
        "openvino": ov.get_version(), "max_abs_diff": diff,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sd15", choices=["sd15", "sd-turbo", "sdxl"])
    p.add_argument("--figures", default="unet:256:2,unet:512:2,vae-decode:512")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="OpenVINO's and ours")
    p.add_argument("--seed", type=int, default=0, help="of the random weights")
    p.add_argument("--bin", type=Path, default=cd.REPO / "target" / "release" / "sd-worker-cpu")
    p.add_argument("--weights-dir", type=Path, default=None, help="default: /tmp/sd-bench-weights/<model>")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dump-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=PRECISIONS, default="default", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.weights_dir is None:
        args.weights_dir = Path("/tmp/sd-bench-weights") / args.model
    if args.child:
        child(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
