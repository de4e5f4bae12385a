"""Writes static/favicon.ico: a 32x32 clock face (the header's slate, a white rim and hands).

Drawn here, in the standard library only, so the icon can be made again exactly:
``python tools/make_favicon.py``.
"""

import math
import pathlib
import struct
import zlib

SIZE = 32
SLATE, WHITE, CLEAR = (31, 41, 55, 255), (255, 255, 255, 255), (0, 0, 0, 0)


def pixel(x, y):
    """The colour at pixel centre (x, y): a slate disc, a white rim, hands at ten past two."""
    cx = cy = SIZE / 2
    dx, dy = x + 0.5 - cx, y + 0.5 - cy
    r = math.hypot(dx, dy)
    if r > 15.5:
        return CLEAR
    if r > 13:
        return WHITE
    for length, angle in ((7.5, -30), (10.5, 60)):   # hour hand towards 2, minute hand towards 10 past
        a = math.radians(angle - 90)
        ux, uy = math.cos(a), math.sin(a)
        along = dx * ux + dy * uy
        if -1 <= along <= length and abs(-dx * uy + dy * ux) <= 1.3:
            return WHITE
    return SLATE


def png(size):
    rows = b"".join(b"\0" + bytes(c for x in range(size) for c in pixel(x, y)) for y in range(size))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def ico(image, size):
    """An ICO holding one PNG image (every browser reads those)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(image), 6 + 16)
    return header + entry + image


if __name__ == "__main__":
    out = pathlib.Path(__file__).resolve().parent.parent / "static" / "favicon.ico"
    out.write_bytes(ico(png(SIZE), SIZE))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
