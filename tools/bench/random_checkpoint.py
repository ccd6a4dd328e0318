"""A full-size random SD 1.5 or SDXL model in fp16, as a single-file LDM/SGM
checkpoint and as a diffusers folder holding the same weights, for measuring
load time and peak memory (README, "Single-file checkpoints").

The architectures are sd-core's built-in configs; each diffusers tensor is
drawn from a seed derived from its name, so both layouts hold the same values.
Tensors are written one component at a time, straight to the files, so the
script never holds more than one component (SDXL's UNet: 5 GB).

    /work/venv/bin/python tools/bench/random_checkpoint.py --model sd15 \
        --file /tmp/sd15.safetensors --folder /tmp/sd15-folder
"""

import argparse
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools/fixtures"))
from make_single_file import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm  # noqa: E402

CONFIGS = ROOT / "crates/core/assets/single-file-configs"


def components(model):
    folder = CONFIGS / {"sd15": "sd1", "sdxl": "sdxl"}[model]
    config = lambda name: json.loads((folder / f"{name}.json").read_text())  # noqa: E731
    parts = [("unet", UNet2DConditionModel, config("unet")), ("vae", AutoencoderKL, config("vae")),
             ("text_encoder", CLIPTextModel, config("text_encoder"))]
    if model == "sdxl":
        parts.append(("text_encoder_2", CLIPTextModelWithProjection, config("text_encoder_2")))
    return folder, parts


def to_ldm(name, state, config):
    if name == "unet":
        return unet_to_ldm(state, config)
    if name == "vae":
        return vae_to_ldm(state, config)
    if name == "text_encoder":
        prefix = "conditioner.embedders.0.transformer." if "text_encoder_2" in ALL else "cond_stage_model.transformer."
        return clip_to_ldm(state, prefix)
    return open_clip_to_ldm(state, "conditioner.embedders.1.model.", config["hidden_size"])


def shapes(cls, config):
    with init_empty_weights():
        model = cls(CLIPTextConfig(**config)) if cls.__module__.startswith("transformers") else cls.from_config(config)
    return {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}


def half(tensor):
    """Floating-point tensors in fp16, as checkpoints are downloaded; integer buffers as they are."""
    return tensor.to(torch.float16) if tensor.is_floating_point() else tensor


def drawn(meta):
    out = {}
    for key, value in meta.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        out[key] = (torch.randn(value.shape, generator=g) * 0.02).to(torch.float16)
    return out


class Writer:
    """A safetensors file written tensor by tensor in the header's order."""

    DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}

    def __init__(self, path, entries):
        header, offset = {}, 0
        for name, (dtype, shape) in entries.items():
            size = torch.empty(0, dtype=dtype).element_size() * int(torch.Size(shape).numel())
            header[name] = {"dtype": self.DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.order = list(entries)
        self.file = open(path, "wb")
        self.file.write(struct.pack("<Q", len(text)) + text)

    def write(self, tensors):
        for name in list(self.order):
            if name not in tensors:
                break
            self.file.write(tensors[name].contiguous().numpy().tobytes())
            self.order.pop(0)

    def close(self):
        assert not self.order, f"unwritten: {self.order[:3]}"
        self.file.close()


def main():
    global ALL
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["sd15", "sdxl"], required=True)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    configs, parts = components(args.model)
    ALL = [name for name, _, _ in parts]
    metas = {name: shapes(cls, config) for name, cls, config in parts}
    checkpoint = None
    if args.file:
        entries = {}
        for name, _, config in parts:
            ldm = to_ldm(name, {k: torch.empty(v.shape, dtype=torch.float16, device="meta") for k, v in metas[name].items()}, config)
            entries |= {k: (half(v).dtype, tuple(v.shape)) for k, v in ldm.items()}
        checkpoint = Writer(args.file, entries)
    for name, _, config in parts:
        state = drawn(metas[name])
        if checkpoint:
            checkpoint.write({k: half(v) for k, v in to_ldm(name, state, config).items()})
        if args.folder:
            out = args.folder / name
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(configs / f"{name}.json", out / "config.json")
            stem = "model" if name.startswith("text_encoder") else "diffusion_pytorch_model"
            writer = Writer(out / f"{stem}.safetensors", {k: (v.dtype, tuple(v.shape)) for k, v in state.items()})
            writer.write(state)
            writer.close()
        del state
        print(f"{name} written", flush=True)
    if checkpoint:
        checkpoint.close()
    if args.folder:
        (args.folder / "scheduler").mkdir(exist_ok=True)
        shutil.copy(configs / "scheduler.json", args.folder / "scheduler/scheduler_config.json")
        classes = {"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
                   "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "PNDMScheduler"]}
        for tokenizer in ["tokenizer"] + (["tokenizer_2"] if args.model == "sdxl" else []):
            (args.folder / tokenizer).mkdir(exist_ok=True)
            for file in ["vocab.json", "merges.txt"]:
                shutil.copy(ROOT / "crates/core/assets/clip-vocab" / file, args.folder / tokenizer / file)
            classes[tokenizer] = ["transformers", "CLIPTokenizer"]
        if args.model == "sdxl":
            classes["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        index = {"_class_name": "StableDiffusionXLPipeline" if args.model == "sdxl" else "StableDiffusionPipeline",
                 **classes}
        (args.folder / "model_index.json").write_text(json.dumps(index, indent=2))


if __name__ == "__main__":
    main()
