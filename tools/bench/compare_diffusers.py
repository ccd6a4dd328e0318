#!/usr/bin/env python3
"""Time sd-worker against diffusers/PyTorch on the same weights, inputs and machine.

For each figure (component at a size and batch) the Rust benchmark
(`sd-worker-cpu bench`) and diffusers run in turn, each in a fresh process and
each reporting the median of `--reps` timed repetitions after `--warmup`
untimed ones; with `--rounds R` the pair runs R times, alternating. It prints
per figure: both medians, the ratio Rust/PyTorch (median over rounds), both
peak resident memories, and the largest difference between the two outputs.

The weights are the benchmark's deterministic random weights, written once as
a diffusers folder by `sd-worker-cpu bench --save-weights`; diffusers loads
that folder and the inputs the Rust side dumped, so the outputs are comparable.

    python tools/bench/compare_diffusers.py --model sd15 \
        --figures unet:256:2,unet:512:2,vae-decode:256,vae-decode:512 --reps 3

Figures are `component:size[:batch]` with component one of unet, vae-decode,
vae-encode, text (size ignored) and image. The image figure runs both sides'
pipelines (sd-core's `StableDiffusion`, diffusers' `DiffusionPipeline`) on the
same prompt and seed; the diffusers side's stages are the time in
`encode_prompt` and in `vae.decode`, and the rest.
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

REPO = Path(__file__).resolve().parents[2]
TIMESTEP = 500.0
# The benchmark's prompt (`sd_worker::cli::bench::PROMPT`).
PROMPT = "a photograph of an astronaut riding a horse"


def parse_figure(text: str) -> tuple[str, int, int]:
    parts = text.split(":")
    component = parts[0]
    size = int(parts[1]) if len(parts) > 1 else 0
    batch = int(parts[2]) if len(parts) > 2 else 1
    if component == "text":
        size = 0
    return component, size, batch


def dump_name(model: str, component: str, size: int, batch: int) -> str:
    rust_batch = batch if component == "unet" else 1
    return f"{model}-{component}-{size}-b{rust_batch}.safetensors"


# --------------------------------------------------------------------------- driver


def run_rust(args, component, size, batch, dump_dir) -> dict:
    cmd = [
        str(args.bin), "bench", "--json",
        "--models", args.model,
        "--components", component,
        "--sizes", str(max(size, 8)),
        "--batches", str(batch),
        "--reps", str(args.reps),
        "--warmup", str(args.warmup),
        "--weights", str(args.weights_dir),
        "--dump", str(dump_dir),
        "--threads", str(args.threads),
        "--seed", str(args.seed),
    ]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.guidance_scale is not None:
        cmd += ["--guidance-scale", str(args.guidance_scale)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def run_torch(args, component, size, batch, dump_dir) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--child",
        "--model", args.model,
        "--weights-dir", str(args.weights_dir),
        "--figures", f"{component}:{size}:{batch}",
        "--reps", str(args.reps),
        "--warmup", str(args.warmup),
        "--threads", str(args.threads),
        "--dump-dir", str(dump_dir),
        "--seed", str(args.seed),
    ]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    if args.guidance_scale is not None:
        cmd += ["--guidance-scale", str(args.guidance_scale)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
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
    rows = []
    for text in args.figures.split(","):
        component, size, batch = parse_figure(text)
        rust_runs, torch_runs = [], []
        for _ in range(args.rounds):
            rust_runs.append(run_rust(args, component, size, batch, dump_dir))
            torch_runs.append(run_torch(args, component, size, batch, dump_dir))
            print(
                f"  {component} {size} b{batch}: rust {rust_runs[-1]['median_s']:.3f}s "
                f"torch {torch_runs[-1]['median_s']:.3f}s",
                file=sys.stderr,
            )
        ratios = [r["median_s"] / t["median_s"] for r, t in zip(rust_runs, torch_runs)]
        row = {
            "component": component,
            "size": size,
            "batch": rust_runs[-1]["batch"],
            "rust_s": statistics.median(r["median_s"] for r in rust_runs),
            "torch_s": statistics.median(t["median_s"] for t in torch_runs),
            "ratio": statistics.median(ratios),
            "rust_peak_mib": max(r["run_peak_mib"] for r in rust_runs),
            "torch_peak_mib": max(t["run_peak_mib"] for t in torch_runs),
            "rust_load_peak_mib": max(r["load_peak_mib"] for r in rust_runs),
            "torch_load_peak_mib": max(t["load_peak_mib"] for t in torch_runs),
            "max_abs_diff": torch_runs[-1].get("max_abs_diff"),
            "rust_stages": rust_runs[-1].get("stages"),
            "torch_stages": torch_runs[-1].get("stages"),
        }
        rows.append(row)
    print_rows(args, rows)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2))


def print_rows(args, rows) -> None:
    print(
        f"model {args.model}, {args.threads} threads, medians of {args.reps} reps "
        f"(warmup {args.warmup}), {args.rounds} round(s); ratio = Rust / PyTorch"
    )
    head = (
        f"{'figure':<18} {'rust_s':>8} {'torch_s':>8} {'ratio':>6} "
        f"{'rust_MiB':>9} {'torch_MiB':>9} {'mem_ratio':>9} {'max|diff|':>10}"
    )
    print(head)
    for r in rows:
        name = f"{r['component']} {r['size']}" + (f" b{r['batch']}" if r["component"] in ("unet", "image") else "")
        diff = r["max_abs_diff"]
        print(
            f"{name:<18} {r['rust_s']:>8.3f} {r['torch_s']:>8.3f} {r['ratio']:>6.2f} "
            f"{r['rust_peak_mib']:>9.0f} {r['torch_peak_mib']:>9.0f} "
            f"{r['rust_peak_mib'] / r['torch_peak_mib']:>9.2f} "
            f"{diff if diff is None else format(diff, '.2e'):>10}"
        )
        for side in ("rust", "torch"):
            stages = r.get(f"{side}_stages")
            if stages:
                total = sum(stages)
                parts = ", ".join(
                    f"{n} {s:.2f}s ({100 * s / total:.0f}%)"
                    for n, s in zip(("text", "denoise", "decode"), stages)
                )
                print(f"{'':<18} {side}: {parts}")


# --------------------------------------------------------------------------- child


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(args) -> None:
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    component, size, batch = parse_figure(args.figures)
    root = args.weights_dir
    dump = load_file(str(args.dump_dir / dump_name(args.model, component, size, batch)))
    dtype = torch.float32

    reset_peak()
    started = time.perf_counter()
    models = load_models(args.model, component, root, dtype)
    load_s = time.perf_counter() - started
    load_peak = peak_mib()

    outputs: dict = {}
    stages: list = []
    run = make_run(args, component, size, models, dump, outputs, stages)
    with torch.inference_mode():
        for _ in range(args.warmup):
            run()
        reset_peak()
        times = []
        for _ in range(args.reps):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    run_peak = peak_mib()

    diffs = []
    for name, value in outputs.items():
        if name in dump:
            diffs.append((value.float() - dump[name].float()).abs().max().item())
    result = {
        "component": component,
        "size": size,
        "batch": batch,
        "reps": args.reps,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "load_s": load_s,
        "load_peak_mib": load_peak,
        "run_peak_mib": run_peak,
        "max_abs_diff": max(diffs) if diffs else None,
    }
    if stages:
        timed = stages[-args.reps:]
        result["stages"] = [statistics.median(s[i] for s in timed) for i in range(3)]
    print(json.dumps(result))


def load_models(model: str, component: str, root: Path, dtype) -> dict:
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    models = {}
    if component == "image":
        models["pipe"] = DiffusionPipeline.from_pretrained(root, torch_dtype=dtype)
        models["pipe"].set_progress_bar_config(disable=True)
    if component == "unet":
        models["unet"] = UNet2DConditionModel.from_pretrained(root / "unet", torch_dtype=dtype).eval()
    if component in ("vae-decode", "vae-encode"):
        models["vae"] = AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype).eval()
    if component == "text":
        models["text"] = [CLIPTextModel.from_pretrained(root / "text_encoder", torch_dtype=dtype).eval()]
        if model == "sdxl":
            models["text"].append(
                CLIPTextModelWithProjection.from_pretrained(root / "text_encoder_2", torch_dtype=dtype).eval()
            )
    return models


def encode_text(encoders, ids, ids_2):
    import torch

    if len(encoders) == 1:
        return encoders[0](ids).last_hidden_state, None
    a = encoders[0](ids, output_hidden_states=True)
    b = encoders[1](ids_2, output_hidden_states=True)
    context = torch.cat([a.hidden_states[-2], b.hidden_states[-2]], dim=2)
    return context, b.text_embeds


def timed(obj, name: str, seconds: dict) -> None:
    """Adds the seconds every call of `obj.name` takes to `seconds[name]`."""
    inner = getattr(obj, name)

    def wrapper(*a, **kw):
        started = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            seconds[name] += time.perf_counter() - started

    setattr(obj, name, wrapper)


def make_run(args, component, size, models, dump, outputs, stages):
    import torch

    if component == "unet":
        unet = models["unet"]
        sample, context = dump["sample"], dump["encoder_hidden_states"]
        added = None
        if "text_embeds" in dump:
            added = {"text_embeds": dump["text_embeds"], "time_ids": dump["time_ids"]}

        def run():
            outputs["out"] = unet(sample, TIMESTEP, encoder_hidden_states=context, added_cond_kwargs=added).sample

        return run
    if component == "vae-decode":
        vae, z = models["vae"], dump["latents"]

        def run():
            outputs["out"] = vae.decode(z).sample

        return run
    if component == "vae-encode":
        vae, image = models["vae"], dump["image"]

        def run():
            dist = vae.encode(image).latent_dist
            outputs["mean"], outputs["logvar"] = dist.mean, dist.logvar

        return run
    if component == "text":
        encoders, ids = models["text"], dump["input_ids"]
        ids_2 = dump.get("input_ids_2", ids)

        def run():
            context, pooled = encode_text(encoders, ids, ids_2)
            outputs["out"] = context
            if pooled is not None:
                outputs["pooled"] = pooled

        return run
    if component == "image":
        turbo = args.model == "sd-turbo"
        steps = args.steps if args.steps is not None else (1 if turbo else 4)
        guidance = args.guidance_scale if args.guidance_scale is not None else (0.0 if turbo else 7.5)
        pipe = models["pipe"]
        seconds = {"encode_prompt": 0.0, "decode": 0.0}
        timed(pipe, "encode_prompt", seconds)
        timed(pipe.vae, "decode", seconds)

        def keep_latents(_pipe, _index, _timestep, kwargs):
            outputs["latents_final"] = kwargs["latents"]
            return kwargs

        def run():
            seconds.update(encode_prompt=0.0, decode=0.0)
            started = time.perf_counter()
            image = pipe(
                PROMPT,
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=size,
                width=size,
                generator=torch.Generator("cpu").manual_seed(args.seed),
                output_type="pt",
                callback_on_step_end=keep_latents,
            ).images
            total = time.perf_counter() - started
            outputs["image"] = image
            text_s, decode_s = seconds["encode_prompt"], seconds["decode"]
            stages.append((text_s, total - text_s - decode_s, decode_s))

        return run
    raise SystemExit(f"unknown component {component}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sd15", choices=["sd15", "sd-turbo", "sdxl"])
    p.add_argument("--figures", default="unet:256:2,unet:512:2,vae-decode:256,vae-decode:512")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="Rust/PyTorch pairs per figure, alternating")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads and RAYON_NUM_THREADS")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="of the random weights and the image's noise")
    p.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "sd-worker-cpu")
    p.add_argument("--weights-dir", type=Path, default=None, help="default: /tmp/sd-bench-weights/<model>")
    p.add_argument("--json-out", type=Path, default=None, help="also write the rows as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dump-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.weights_dir is None:
        args.weights_dir = Path("/tmp/sd-bench-weights") / args.model
    if args.child:
        child(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
