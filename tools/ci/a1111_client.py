"""Drives a worker's AUTOMATIC1111 API with the `webuiapi` client.

Usage: a1111_client.py BASE_URL (a worker serving fixtures/tiny-sd15 with the
real engine). Exits non-zero, naming the check, when one fails.
"""

import sys
import threading
import time

import webuiapi
from PIL import Image

MODEL = "tiny-sd15"


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def pixels(image):
    return image.convert("RGB").tobytes()


def within_a_level(a, b):
    """Whether two pictures differ by at most one 8-bit level anywhere: a
    batch's images go through the UNet together, whose sums may round the
    last bits differently from a job of one."""
    a, b = pixels(a), pixels(b)
    return len(a) == len(b) and all(abs(x - y) <= 1 for x, y in zip(a, b))


def main(base):
    api = webuiapi.WebUIApi(baseurl=f"{base}/sdapi/v1", sampler="Euler a", steps=2)

    # What clients read when they connect.
    check(api.util_get_model_names() == [MODEL], "sd-models lists the model served")
    check(api.util_get_current_model() == MODEL, "options name it as the checkpoint")
    api.util_set_model(MODEL)
    samplers = api.util_get_sampler_names()
    check("Euler a" in samplers and "DPM++ 2M Karras" in samplers, f"samplers: {samplers}")
    check(api.util_get_scheduler_names() == ["automatic", "karras"], "schedulers")
    check(api.get_loras() == [], "no LoRAs")

    # Text to image: a batch of two, seeds 5 and 6.
    result = api.txt2img(prompt="a red cube", seed=5, width=64, height=64, steps=2,
                         batch_size=2, sampler_name="Euler a")
    check(len(result.images) == 2, "txt2img: two images")
    check(all(i.size == (64, 64) for i in result.images), "txt2img: 64x64")
    check(result.info["all_seeds"] == [5, 6], f"txt2img: seeds {result.info['all_seeds']}")
    check("Seed: 6" in result.info["infotexts"][1], "txt2img: infotexts")
    check(result.info["sd_model_name"] == MODEL, "txt2img: model name")
    check(result.parameters["prompt"] == "a red cube", "txt2img: parameters echoed")
    # The second image of the batch is the one seed 6 makes alone.
    alone = api.txt2img(prompt="a red cube", seed=6, width=64, height=64, steps=2,
                        sampler_name="Euler a")
    check(within_a_level(alone.image, result.images[1]), "txt2img: seed 6 reproduces")
    karras = api.txt2img(prompt="a red cube", seed=1, width=64, height=64, steps=2,
                         sampler_name="DPM++ 2M", scheduler="karras")
    check(karras.info["sampler_name"] == "DPM++ 2M Karras", "DPM++ 2M + karras")

    # Image to image, at another size than the input's; then inpainting.
    changed = api.img2img(images=[result.image], prompt="a blue cube", denoising_strength=0.5,
                          width=96, height=64, steps=2, seed=1)
    check(changed.image.size == (96, 64), "img2img: the size asked for")
    check(changed.info["denoising_strength"] == 0.5, "img2img: strength")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    painted = api.img2img(images=[result.image], mask_image=mask, prompt="a hole",
                          denoising_strength=0.75, width=64, height=64, steps=2, seed=2)
    check(painted.image.size == (64, 64), "img2img with a mask: inpainted")

    # Bad input: an A1111-shaped 422 naming the known samplers.
    try:
        api.txt2img(prompt="x", width=64, height=64, steps=2, sampler_name="Heun")
        check(False, "an unknown sampler is refused")
    except RuntimeError as err:
        status, text = err.args
        check(status == 422 and "Euler a" in text and '"detail"' in text,
              f"an unknown sampler is refused: {status} {text}")

    # Progress while a long call runs, then interrupt ends it early.
    answer = {}

    def long_call():
        started = time.monotonic()
        answer["result"] = api.txt2img(prompt="a long one", width=256, height=256, steps=150,
                                       n_iter=8, seed=3)
        answer["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=long_call)
    thread.start()
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if 0 < progress["progress"] < 1:
            seen = progress
            break
        time.sleep(0.02)
    check(seen is not None, "progress between 0 and 1 while a call runs")
    check(seen["state"]["sampling_steps"] == 150 and seen["state"]["job_count"] >= 1,
          f"progress state: {seen['state']}")
    interrupted_at = time.monotonic()
    check(api.interrupt() == {}, "interrupt answers {}")
    thread.join(timeout=30)
    check(not thread.is_alive(), "the interrupted call returns")
    check(answer["result"].images == [], "the interrupted call answers no images")
    check(time.monotonic() - interrupted_at < 10, "it returns soon after the interrupt")
    deadline = time.monotonic() + 10
    while api.get_progress()["state"]["job_count"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    check(api.get_progress()["state"]["job_count"] == 0, "no job left after the interrupt")


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"))
