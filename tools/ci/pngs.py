"""Small PNGs written with the standard library, for the CI scripts' requests
(shared by tools/ci/openai_client.py and tools/ci/schemathesis_hooks.py, which
run in different venvs with tools/ci on their import path)."""

import struct
import zlib


def png(width, height, channels, pixel):
    """A PNG of 8-bit RGB (3) or RGBA (4) pixels; pixel(x, y) gives each."""
    color_type = {3: 2, 4: 6}[channels]
    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
