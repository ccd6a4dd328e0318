"""The cost of switching LoRA sets between jobs, on a full-size random SD 1.5.

Writes a random SD 1.5 (the bench configs, fp16 files, about 2.1 GB) and two random rank-32 kohya
LoRAs on every attention, feed-forward and resnet convolution layer of the UNet and the text encoder's
attention and MLP into WORK, starts the worker binary on them, runs 64x64 one-step jobs with the LoRA
sets below one after another and prints each job's time from submission to completion and the
worker's own rebuild times (its `rebuilt with LoRA adapters` log lines). Run it under the big-files
lock and delete WORK afterwards:

    flock /work/big.lock -c 'python tools/bench/lora_switch.py WORK target/release/sd-worker-cpu; rm -rf WORK'
"""

import json
import pathlib
import re
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "crates/worker/bench-configs/sd15"
RANK = 32
SETS = [
    ("none", []),
    ("A", [{"path": "a", "strength": 0.8}]),
    ("A again", [{"path": "a", "strength": 0.8}]),
    ("B", [{"path": "b", "strength": 0.8}]),
    ("none", []),
]


def write_model(torch, out):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet.json").read_text()))
    unet.half().save_pretrained(out / "unet")
    vae = AutoencoderKL.from_config(json.loads((CONFIGS / "vae.json").read_text()))
    vae.half().save_pretrained(out / "vae")
    te = CLIPTextModel(CLIPTextConfig(**json.loads((CONFIGS / "text_encoder.json").read_text())))
    te.half().save_pretrained(out / "text_encoder")
    import shutil

    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIGS / "scheduler.json", out / "scheduler/scheduler_config.json")

    shutil.copytree(ROOT / "fixtures/tiny-sd15/tokenizer", out / "tokenizer", dirs_exist_ok=True)
    (out / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
    }))
    return unet, te


def write_lora(torch, unet, te, path, seed):
    import torch.nn as nn
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for prefix, model in (("lora_unet_", unet), ("lora_te_text_model_", te)):
        for name, module in model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            linear = isinstance(module, nn.Linear) and (
                leaf in ("to_q", "to_k", "to_v", "proj_in", "proj_out", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
                or name.endswith(("to_out.0", "ff.net.0.proj", "ff.net.2"))
            )
            conv = isinstance(module, nn.Conv2d) and leaf in ("conv1", "conv2", "proj_in", "proj_out")
            if not (linear or conv):
                continue
            w = module.weight
            key = prefix + name.replace(".", "_")
            down_shape = [RANK, *w.shape[1:]]
            up_shape = [w.shape[0], RANK] + ([1, 1] if w.dim() == 4 else [])
            tensors[f"{key}.lora_down.weight"] = (torch.randn(down_shape, generator=g) * 0.01).half()
            tensors[f"{key}.lora_up.weight"] = (torch.randn(up_shape, generator=g) * 0.01).half()
            tensors[f"{key}.alpha"] = torch.tensor(float(RANK / 2)).half()
    save_file(tensors, str(path))
    return len(tensors) // 3


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def wait_done(url, job):
    while True:
        status = json.load(urllib.request.urlopen(f"{url}/v1/jobs/{job}"))
        if status["state"] in ("completed", "failed", "cancelled"):
            return status
        time.sleep(0.02)


def main():
    import torch

    work, binary = pathlib.Path(sys.argv[1]), sys.argv[2]
    model, loras = work / "sd15", work / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    if not (model / "model_index.json").exists():
        unet, te = write_model(torch, model)
        for name, seed in (("a", 1), ("b", 2)):
            layers = write_lora(torch, unet, te, loras / f"{name}.safetensors", seed)
        print(f"wrote the model and two LoRAs of {layers} layers, rank {RANK}", flush=True)
        del unet, te
    log = open(work / "worker.log", "w")
    worker = subprocess.Popen(
        [binary, "--model", str(model), "--lora-dir", str(loras), "--port", "18931"],
        stderr=log, env={"RUST_LOG": "info", "PATH": "/usr/bin:/bin"},
    )
    url = "http://127.0.0.1:18931"
    try:
        while True:
            try:
                if urllib.request.urlopen(f"{url}/ready").status == 200:
                    break
            except Exception:
                if worker.poll() is not None or "failed to load" in (work / "worker.log").read_text():
                    raise SystemExit("the worker did not load the model; see worker.log")
                time.sleep(0.5)
        for label, set_ in SETS:
            started = time.time()
            job = post(f"{url}/v1/jobs", {
                "operation": "image_generation", "prompt": "a lighthouse", "width": 64, "height": 64,
                "steps": 1, "seed": 1, "loras": set_,
            })["job_id"]
            status = wait_done(url, job)
            print(f"{label:>11}: job {time.time() - started:6.2f} s ({status['state']})", flush=True)
    finally:
        worker.terminate()
        worker.wait()
        log.close()
    for line in (work / "worker.log").read_text().splitlines():
        if "rebuilt with LoRA" in line or "model loaded" in line:
            print(re.sub(r"\x1b\[[0-9;]*m", "", line))


if __name__ == "__main__":
    main()
