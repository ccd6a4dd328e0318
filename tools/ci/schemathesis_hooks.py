"""Schemathesis hooks for sd-worker (loaded through SCHEMATHESIS_HOOKS).

Some rules of a job request cannot be written in JSON Schema, so a random
schema-valid request may rightly get a 400 naming the field. In schema-valid
(positive) cases this hook makes the generated request follow them, so the
`positive_data_acceptance` check still tests every other field:

- a picture is a base64 PNG or JPEG that decodes (the schema says only "a
  non-empty string"): it becomes a real 64x64 grey PNG;
- image-to-image runs `strength x steps` of its steps, at least one: a
  strength (given, or the operation's default) too small for the steps (taken
  as 1 when absent) becomes 1;
- the picture of image-to-image and inpainting has two names, `input_image`
  and `init_image` (rbee's operations use one each), so a body with both is
  refused as a duplicate; the schema declares only the operation's own name,
  and the other one is dropped;
- a LoRA names a file in the worker's `--lora-dir`, which CI's worker does
  not have (the schema says only "a name"): `loras` becomes empty;
- `fast_decode` asks for the tiny autoencoder, which CI's worker does not
  load (the schema cannot know what a worker loaded): it becomes false;
- the `lcm` scheduler runs at most 50 steps (the model's
  `original_inference_steps`): more become 50;
- the OpenAI routes' `size` is `WIDTHxHEIGHT` with each side a multiple of 8
  from 64 to the worker's max size (the schema says only "digits x digits"):
  another becomes `64x64`;
- `POST /v1/images/edits` uploads files: its `image` becomes a real 64x64
  PNG, and its `mask` a 64x64 PNG with an alpha channel, transparent in its
  left half (OpenAI's masks mark the area to edit by transparency); the
  strength rule above holds for it too (inpainting with a mask, image-to-image
  without); and a form field's name travels in a part's header, where
  control characters and quotes cannot go, so generated extra fields with
  such names are dropped.

The AUTOMATIC1111 routes (`/sdapi/v1/...`) have rules of the same kind:

- `init_images` holds one picture and `mask` is one: real 64x64 PNGs;
- `img2img` runs `denoising_strength x steps` steps, at least one (0.75
  when absent, steps taken as 1): too small becomes 1;
- the `LCM` sampler runs at most 50 steps;
- the `karras` schedule goes with the `DPM++ 2M` samplers only (the schema
  lists samplers and schedules separately): with another, it becomes
  `automatic`;
- `POST /sdapi/v1/options` accepts only the model served as
  `sd_model_checkpoint`: it becomes that (`tiny-sd15`, the CI model);
- `batch_size x n_iter` images of up to 2048x2048 each would make one case
  take minutes on CI's CPUs: a case over 4 megapixels in all asks for one image.

Schema-violating (negative) cases are left as generated.
"""

import base64

import schemathesis
from pngs import png
from schemathesis.generation.modes import GenerationMode

# A 64x64 RGB PNG, mid grey: a valid picture and, for inpainting, a mask of the
# same size.
IMAGE_FILE = png(64, 64, 3, lambda x, y: (128, 128, 128))
PNG_64 = base64.b64encode(IMAGE_FILE).decode()
MAX_SIZE = 2048  # the worker's default --max-size, which tools/ci/schemathesis.sh keeps
MASK_FILE = png(64, 64, 4, lambda x, y: (0, 0, 0, 0 if x < 32 else 255))


def valid_size(size):
    try:
        width, height = (int(side) for side in size.split("x"))
    except (AttributeError, ValueError):
        return False
    return all(side % 8 == 0 and 64 <= side <= MAX_SIZE for side in (width, height))


def sendable_name(name):
    """Whether a form field's name can go in its part's header as is."""
    return all(" " <= c <= "~" and c not in '"\\' for c in name)


def fix_strength(body, operation, steps):
    """Makes strength x steps at least one step for image-to-image."""
    strength = body.get("strength")
    if not isinstance(strength, (int, float)) or isinstance(strength, bool):
        strength = DEFAULT_STRENGTH[operation]
    if strength * (steps if isinstance(steps, int) else 1) < 1:
        body["strength"] = 1.0


PICTURE_FIELDS = ("input_image", "init_image", "mask_image")
LCM_MAX_STEPS = 50
# The name of the picture each image operation declares, and its alias.
PICTURE_NAMES = {
    "image_transform": ("input_image", "init_image"),
    "image_inpaint": ("init_image", "input_image"),
}
# The strength of an image operation that does not give one.
DEFAULT_STRENGTH = {"image_transform": 0.8, "image_inpaint": 1.0}


# The model CI serves, as `GET /sdapi/v1/sd-models` names it.
CI_MODEL = "tiny-sd15"
KARRAS_SAMPLERS = ("dpm++ 2m", "dpm++ 2m karras")
# The most pixels one A1111 case may ask for, in all its images.
A1111_PIXEL_BUDGET = 4 * 1024 * 1024


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def map_a1111(path, body):
    """Makes a schema-valid A1111 body follow the rules its schema cannot say."""
    if path.endswith("/options"):
        if isinstance(body.get("sd_model_checkpoint"), str):
            body["sd_model_checkpoint"] = CI_MODEL
        return
    if isinstance(body.get("init_images"), list):
        body["init_images"] = [PNG_64 for _ in body["init_images"]]
    if isinstance(body.get("mask"), str):
        body["mask"] = PNG_64
    sampler = body.get("sampler_name") or body.get("sampler_index")
    steps = body.get("steps")
    if isinstance(sampler, str) and sampler.lower() == "lcm" and isinstance(steps, int) \
            and steps > LCM_MAX_STEPS:
        body["steps"] = steps = LCM_MAX_STEPS
    scheduler = body.get("scheduler")
    if isinstance(scheduler, str) and scheduler.lower() == "karras" and \
            not (isinstance(sampler, str) and sampler.lower() in KARRAS_SAMPLERS):
        body["scheduler"] = "automatic"
    if path.endswith("/img2img"):
        strength = body.get("denoising_strength")
        if not is_number(strength):
            strength = 0.75
        if strength * (steps if isinstance(steps, int) else 1) < 1:
            body["denoising_strength"] = 1.0
    width, height = body.get("width"), body.get("height")
    size = (width if isinstance(width, int) else 512) * (height if isinstance(height, int) else 512)
    count = 1
    for field in ("batch_size", "n_iter"):
        if isinstance(body.get(field), int):
            count *= body[field]
    if size * count > A1111_PIXEL_BUDGET:
        body["batch_size"] = body["n_iter"] = 1


@schemathesis.hook
def map_case(context, case):
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and isinstance(case.body, dict) and case.path.startswith("/sdapi/"):
        map_a1111(case.path, case.body)
    elif positive and isinstance(case.body, dict):
        for field in PICTURE_FIELDS:
            if field in case.body:
                case.body[field] = PNG_64
        body = case.body
        declared, alias = PICTURE_NAMES.get(body.get("operation"), (None, None))
        if declared in body and alias in body:
            del body[alias]
        if body.get("loras"):
            body["loras"] = []
        if body.get("fast_decode"):
            body["fast_decode"] = False
        steps = body.get("steps")
        if body.get("scheduler") == "lcm" and isinstance(steps, int) and steps > LCM_MAX_STEPS:
            body["steps"] = steps = LCM_MAX_STEPS
        operation = body.get("operation")
        if operation in DEFAULT_STRENGTH:
            fix_strength(body, operation, steps)
        path = case.operation.path
        if path.startswith("/v1/images/") and "size" in body and body["size"] != "auto":
            if not valid_size(body["size"]):
                body["size"] = "64x64"
        if path == "/v1/images/edits":
            for name in [name for name in body if not sendable_name(name)]:
                del body[name]
            body["image"] = IMAGE_FILE
            if "mask" in body:
                body["mask"] = MASK_FILE
            fix_strength(body, "image_inpaint" if "mask" in body else "image_transform", steps)
    return case
