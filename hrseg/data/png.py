"""Every PNG hrseg writes, plus the palettised support OpenCV lacks (index PNGs, raw palette indices).

``encode_png`` / ``write_png`` are the one way to write an RGB or single-channel
image (RGB is converted to OpenCV's BGR here, at the edge, and nowhere else).

GTAV labels are palettised PNGs whose *indices* are labelIds. OpenCV always
expands a palette to colours, and several labelIds share a colour (e.g. pole
and polegroup), so colours cannot be mapped back. Instead of decoding PNG
ourselves, ``decode_palette_indices`` rewrites the PLTE chunk to the identity
palette (entry i = (i, i, i)) and lets OpenCV decode: the colour it returns
is the index. Writing is a minimal encoder (filter 0, zlib) used by the
procedural scene generator to produce the exact GTAV label format.
"""

from __future__ import annotations

import os
import struct
import zlib

import cv2
import numpy as np

from hrseg.atomic import write_bytes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngError(ValueError):
    """The bytes are not a PNG this module can handle (truncated, corrupt, unsupported)."""


def encode_png(array: np.ndarray) -> bytes:
    """(H, W, 3) RGB or (H, W) single-channel uint8 array -> PNG bytes."""
    image = np.ascontiguousarray(array)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise PngError(f"OpenCV could not encode a {image.shape} {image.dtype} array as PNG")
    return buf.tobytes()


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``encode_png`` written atomically: a reader never sees half a file."""
    write_bytes(path, encode_png(array))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise PngError("not a PNG (bad signature)")
    pos, out = len(PNG_SIGNATURE), []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise PngError("truncated PNG chunk")
        out.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            return out
    raise PngError("truncated PNG (no IEND)")


def encode_palette_png(indices: np.ndarray, palette: np.ndarray, compress_level: int = 6) -> bytes:
    """(H, W) uint8 indices + (256, 3) uint8 RGB palette -> PNG bytes (colour type 3, 8 bit)."""
    if indices.dtype != np.uint8 or indices.ndim != 2:
        raise ValueError("indices must be a (H, W) uint8 array")
    h, w = indices.shape
    rows = np.zeros((h, w + 1), dtype=np.uint8)  # leading filter byte 0 per row
    rows[:, 1:] = indices
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    pal = np.ascontiguousarray(palette[:256], dtype=np.uint8).tobytes()
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"PLTE", pal),
            _chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)),
            _chunk(b"IEND", b""),
        )
    )


def decode_palette_indices(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W) uint8: palette indices for colour type 3, the grey value for grey PNGs."""
    chunks = _chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise PngError("PNG without a valid IHDR")
    _, _, depth, color_type, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    if color_type == 0 and depth <= 8:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise PngError("corrupt PNG data")
        return img
    if color_type != 3:
        raise PngError(f"label PNG has colour type {color_type}, expected palettised (3) or grey (0)")
    entries = min(256, 1 << depth)
    identity = np.repeat(np.arange(entries, dtype=np.uint8)[:, None], 3, axis=1).tobytes()
    parts = [PNG_SIGNATURE]
    for kind, body in chunks:
        if kind == b"tRNS":
            continue  # transparency would add an alpha channel; indices are all we want
        parts.append(_chunk(kind, identity if kind == b"PLTE" else body))
    img = cv2.imdecode(np.frombuffer(b"".join(parts), np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise PngError("corrupt PNG data")
    return np.ascontiguousarray(img[:, :, 0])
