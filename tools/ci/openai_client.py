"""The OpenAI Images API of a running worker, through the official `openai`
Python client (run by tools/ci/openai_client.sh against the tiny SD 1.5
model and the real engine).

Checks that the client parses every answer: a generation of two images with
the extension fields (`seed`, `steps`), whose PNGs decode at the size asked
and carry seeds 5 and 6; an edit with a mask whose left half is transparent;
the model list; and a bad size raising `openai.BadRequestError` whose message
names the size.

Usage: openai_client.py BASE_URL API_KEY MODEL
"""

import base64
import io
import os
import struct
import sys
import zlib

import openai

from pngs import png


def read_png(data):
    """(width, height, text chunks) of an 8-bit RGB or RGBA PNG, its pixel
    data inflated and its length checked."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    stream = io.BytesIO(data[8:])
    width = height = channels = None
    idat = b""
    texts = {}
    while True:
        length, kind = struct.unpack(">I4s", stream.read(8))
        body = stream.read(length)
        (crc,) = struct.unpack(">I", stream.read(4))
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind}"
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8, depth
            channels = {2: 3, 6: 4}[color_type]
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\x00")
            # compression flag, method, language tag, translated keyword, text
            parts = rest[2:].split(b"\x00", 2)
            texts[key.decode("latin-1")] = parts[2].decode("utf-8")
        elif kind == b"IEND":
            break
    pixels = zlib.decompress(idat)
    assert len(pixels) == height * (1 + width * channels), "truncated pixel data"
    return width, height, texts


def seed_in(texts):
    """The `Seed: N` of the A1111 `parameters` chunk."""
    for part in texts["parameters"].replace("\n", ", ").split(", "):
        if part.startswith("Seed: "):
            return int(part[len("Seed: "):])
    raise AssertionError(f"no seed in {texts['parameters']!r}")


def main(base_url, api_key, model):
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)

    result = client.images.generate(
        model=model,
        prompt="a lighthouse at dusk",
        n=2,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 5, "steps": 2},
    )
    assert result.created > 0, result
    assert len(result.data) == 2, result
    for image, seed in zip(result.data, (5, 6)):
        width, height, texts = read_png(base64.b64decode(image.b64_json))
        assert (width, height) == (64, 64), (width, height)
        assert seed_in(texts) == seed, texts
        assert image.model_extra["seed"] == seed, image.model_extra
    print("generate: 2 PNGs of 64x64, seeds 5 and 6")

    picture = png(64, 64, 3, lambda x, y: (x * 4, y * 4, 128))
    mask = png(64, 64, 4, lambda x, y: (0, 0, 0, 0 if x < 32 else 255))
    edited = client.images.edit(
        model=model,
        image=("picture.png", picture, "image/png"),
        mask=("mask.png", mask, "image/png"),
        prompt="a red door",
        n=1,
        size="64x64",
        extra_body={"steps": 2},
    )
    assert len(edited.data) == 1, edited
    width, height, _ = read_png(base64.b64decode(edited.data[0].b64_json))
    assert (width, height) == (64, 64), (width, height)
    print("edit with a mask: a PNG of 64x64")

    models = client.models.list()
    ids = [m.id for m in models.data]
    # A local folder is named by its last component, as in the PNG's `Model:`.
    name = os.path.basename(model.rstrip("/")) if os.path.isdir(model) else model
    assert ids == [name], ids
    assert models.data[0].owned_by == "sd-worker", models.data[0]
    print(f"models: {ids}")

    try:
        client.images.generate(model=model, prompt="a lighthouse", size="65x64")
    except openai.BadRequestError as error:
        message = str(error)
        assert "65x64" in message and "size" in message, message
        assert error.body["param"] == "size", error.body
        print(f"a bad size: BadRequestError ({error.body['message']})")
    else:
        raise AssertionError("size 65x64 was accepted")


if __name__ == "__main__":
    main(*sys.argv[1:])
