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
- the `lcm` scheduler runs at most 50 steps (the model's
  `original_inference_steps`): more become 50.

Schema-violating (negative) cases are left as generated.
"""

import schemathesis
from schemathesis.generation.modes import GenerationMode

# A 64x64 RGB PNG, mid grey: a valid picture and, for inpainting, a mask of the
# same size.
PNG_64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAIAAAAlC+aJAAAAS0lEQVR42u3PMQ0AAAwDoEqv9ErYvQQckD4XAQEB"
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAYHLAB8+AWnmfUycAAAAAElFTkSuQmCC"
)
PICTURE_FIELDS = ("input_image", "init_image", "mask_image")
LCM_MAX_STEPS = 50
# The name of the picture each image operation declares, and its alias.
PICTURE_NAMES = {
    "image_transform": ("input_image", "init_image"),
    "image_inpaint": ("init_image", "input_image"),
}
# The strength of an image operation that does not give one.
DEFAULT_STRENGTH = {"image_transform": 0.8, "image_inpaint": 1.0}


@schemathesis.hook
def map_case(context, case):
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    if positive and isinstance(case.body, dict):
        for field in PICTURE_FIELDS:
            if field in case.body:
                case.body[field] = PNG_64
        body = case.body
        declared, alias = PICTURE_NAMES.get(body.get("operation"), (None, None))
        if declared in body and alias in body:
            del body[alias]
        steps = body.get("steps")
        if body.get("scheduler") == "lcm" and isinstance(steps, int) and steps > LCM_MAX_STEPS:
            body["steps"] = steps = LCM_MAX_STEPS
        operation = body.get("operation")
        if operation in DEFAULT_STRENGTH:
            strength = body.get("strength")
            if not isinstance(strength, (int, float)) or isinstance(strength, bool):
                strength = DEFAULT_STRENGTH[operation]
            if strength * (steps if isinstance(steps, int) else 1) < 1:
                body["strength"] = 1.0
    return case
