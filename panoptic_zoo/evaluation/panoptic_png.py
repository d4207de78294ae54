"""
COCO panoptic PNGs to segment ids (``R + 256 G + 256**2 B``), fast.

Decoding such a PNG with libpng (cv2, PIL) or libspng spends most of its time in zlib's inflate:
panoptic PNGs are a few flat regions, a ~150:1 stream that libdeflate inflates about 20 times
faster than zlib. libspng then undoes PNG's row filters (Paeth included) faster than libpng, but
only reads through zlib. So the IDAT stream is inflated with libdeflate, wrapped again as
*stored* (uncompressed) deflate blocks, which zlib merely copies, and handed to libspng with the
other chunks unchanged. On 640x480 panoptic PNGs this is ~2.8x faster than ``cv2.imdecode``.
"""

from __future__ import annotations

import os
import struct

import cv2
import deflate
import numpy as np
import pyspng

__all__ = ["decode_segment_ids", "read_segment_ids"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Samples per pixel of each PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ID_MASK = 0xFFFFFF  # the id is in R, G, B; alpha, if any, is not part of it (as in panopticapi)


def _chunk(kind: bytes, body) -> bytes:
    crc = deflate.crc32(body, deflate.crc32(kind))
    return b"".join((struct.pack(">I", len(body)), kind, body, struct.pack(">I", crc)))


def _with_stored_idat(png: bytes) -> bytes | None:
    """
    ``png`` with its image data inflated and stored uncompressed, or None for an interlaced
    image (its size in bytes depends on the passes; such files are decoded as they are).
    """
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file (bad signature)")
    header_chunks, idat, pos = [], [], len(PNG_SIGNATURE)
    height = width = None
    while pos + 8 <= len(png):
        length, kind = struct.unpack_from(">I4s", png, pos)
        end = pos + 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack_from(
                ">IIBBBBB", png, pos + 8
            )
            if interlace:
                return None
        if kind == b"IDAT":
            idat.append(png[pos + 8 : end - 4])
        elif idat:
            break  # past the image data: nothing after it affects the pixels
        else:
            header_chunks.append(png[pos:end])
        pos = end
    if height is None or not idat or colour not in CHANNELS:
        raise ValueError("not a valid PNG file (no IHDR or no image data)")
    # One filter-type byte per row, then the row's samples padded to whole bytes.
    raw_size = height * (1 + (width * CHANNELS[colour] * depth + 7) // 8)
    raw = deflate.zlib_decompress(b"".join(idat), raw_size)
    stored = deflate.zlib_compress(raw, 0)
    return b"".join((PNG_SIGNATURE, *header_chunks, _chunk(b"IDAT", stored), _chunk(b"IEND", b"")))


def decode_segment_ids(png: bytes) -> np.ndarray:
    """The segment ids (``uint32``, H x W) of a COCO panoptic PNG given as bytes."""
    # RGB output: libspng's RGBA conversion costs more than its whole decode.
    rgb = pyspng.load(_with_stored_idat(png) or png, format="RGB")
    ids = np.empty(rgb.shape[:2], "<u4")
    # The bytes R, G, B, A of a little-endian uint32 are R + 256 G + 256**2 B + 256**3 A;
    # cvtColor fills A with 255, which the mask clears.
    cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA, dst=ids.view(np.uint8).reshape(*rgb.shape[:2], 4))
    ids &= np.uint32(ID_MASK)
    return ids


def read_segment_ids(path: str | os.PathLike) -> np.ndarray:
    """The segment ids (``uint32``, H x W) of the COCO panoptic PNG at ``path``."""
    with open(path, "rb") as f:
        return decode_segment_ids(f.read())
