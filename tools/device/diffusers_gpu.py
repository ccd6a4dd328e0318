#!/usr/bin/env python3
"""Time diffusers (fp16, PyTorch's SDPA attention) on full-size random weights, for the GPU side-by-side.

The models are built from the configs the Rust benchmark uses (crates/worker/bench-configs/<model>/), with
PyTorch's default random initialisation made directly on the device in the half dtype, and the tokenizer
from sd-core's bundled CLIP vocabulary: nothing is downloaded and no checkpoint is written. Random
weights cost what trained ones cost (the same kernels run); their images are noise (in fp16 possibly NaN:
diffusers' own run of a random SDXL behaves the same way).

One JSON line per figure on stdout:
  {"side": "diffusers", "model", "size", "steps", "guidance_scale", "batch", "reps", "median_s", "min_s",
   "max_s", "max_allocated_mib", "max_reserved_mib", "attention", "dtype", "device_name", "torch", "diffusers"}
max_allocated_mib is torch.cuda.max_memory_allocated() over the timed runs (weights included, the CUDA
context and the caching allocator's slack excluded); max_reserved_mib is what the caching allocator held.

    python tools/device/diffusers_gpu.py --model sd15 --size 512 --steps 20 --guidance-scale 7.5
    python tools/device/diffusers_gpu.py --model sdxl --size 1024 --steps 30 --guidance-scale 5
    python tools/device/diffusers_gpu.py --model sd-turbo --size 512 --steps 1 --guidance-scale 0
    # a smoke test of the script itself without a GPU:
    python tools/device/diffusers_gpu.py --model sd15 --size 64 --steps 1 --device cpu --dtype float32 --reps 1
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "crates" / "worker" / "bench-configs"
VOCAB = REPO / "crates" / "core" / "assets" / "clip-vocab"
# The benchmark's prompt (`sd_worker::cli::bench::PROMPT`).
PROMPT = "a photograph of an astronaut riding a horse"


def read_config(model, name):
    config = json.loads((CONFIGS / model / f"{name}.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_") or k == "_class_name"}


def tokenizer(pad_token):
    from transformers import CLIPTokenizer

    return CLIPTokenizer(
        vocab_file=str(VOCAB / "vocab.json"),
        merges_file=str(VOCAB / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,
    )


def text_encoder(model, name, with_projection):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    skip = {"architectures", "model_type", "torch_dtype", "_class_name"}
    config = CLIPTextConfig(**{k: v for k, v in read_config(model, name).items() if k not in skip})
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(config)


def build_pipeline(torch, model, device, dtype):
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            unet = UNet2DConditionModel.from_config(read_config(model, "unet"))
            vae = AutoencoderKL.from_config(read_config(model, "vae"))
            scheduler_config = read_config(model, "scheduler")
            scheduler = getattr(diffusers, scheduler_config.pop("_class_name")).from_config(scheduler_config)
            if model == "sdxl":
                pipe = diffusers.StableDiffusionXLPipeline(
                    vae=vae,
                    text_encoder=text_encoder(model, "text_encoder", False),
                    text_encoder_2=text_encoder(model, "text_encoder_2", True),
                    tokenizer=tokenizer("<|endoftext|>"),
                    tokenizer_2=tokenizer("!"),
                    unet=unet,
                    scheduler=scheduler,
                    add_watermarker=False,
                )
            else:
                pipe = diffusers.StableDiffusionPipeline(
                    vae=vae,
                    text_encoder=text_encoder(model, "text_encoder", False),
                    tokenizer=tokenizer("!" if model == "sd-turbo" else "<|endoftext|>"),
                    unet=unet,
                    scheduler=scheduler,
                    safety_checker=None,
                    feature_extractor=None,
                    requires_safety_checker=False,
                )
    finally:
        torch.set_default_dtype(previous)
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def attention_processor(pipe):
    names = sorted({type(p).__name__ for p in pipe.unet.attn_processors.values()})
    return ",".join(names)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["sd15", "sd-turbo", "sdxl"], required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--guidance-scale", type=float, required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    args = parser.parse_args()

    import diffusers
    import torch

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    pipe = build_pipeline(torch, args.model, args.device, dtype)
    print(f"[diffusers] {args.model}: built on {args.device} in {time.perf_counter() - started:.1f} s "
          f"(attention: {attention_processor(pipe)})", file=sys.stderr)

    def run():
        generator = torch.Generator(args.device).manual_seed(0)
        pipe(
            PROMPT,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            width=args.size,
            height=args.size,
            generator=generator,
            output_type="pil",
        )
        if cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(args.warmup):
            run()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    mib = lambda b: round(b / 2**20, 1)  # noqa: E731
    figure = {
        "side": "diffusers",
        "model": args.model,
        "size": args.size,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "batch": 2 if args.guidance_scale > 1 else 1,
        "reps": args.reps,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "max_allocated_mib": mib(torch.cuda.max_memory_allocated()) if cuda else None,
        "max_reserved_mib": mib(torch.cuda.max_memory_reserved()) if cuda else None,
        "attention": attention_processor(pipe),
        "dtype": args.dtype,
        "device_name": torch.cuda.get_device_name() if cuda else args.device,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }
    print(json.dumps(figure), flush=True)


if __name__ == "__main__":
    main()
