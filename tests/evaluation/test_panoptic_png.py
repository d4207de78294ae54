"""
The fast panoptic PNG reader gives the ids of PIL + panopticapi's rgb2id, for any PNG kind and
every PNG row filter, and its pixel-pair kernel counts what numpy counts, from arrays or PNGs.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from panoptic_cases import id_png
from panopticapi.utils import rgb2id
from PIL import Image

from panoptic_zoo.evaluation import _pq_kernels
from panoptic_zoo.evaluation.panoptic_png import (
    InflatedPng,
    decode_segment_ids,
    open_segment_ids,
    read_segment_ids,
)

# A 5x3 RGB PNG with Adam7 interlacing (written by pypng; PIL cannot write interlaced PNGs).
INTERLACED_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAUAAAADCAIAAAGjU2I5AAAAPElEQVR4nGNgZGJmYJ07n+Gt6FcGjql8Ey5IcIdaMwBF"
    "L7/XZeAX45Jg12SwMXuTq3c8SOGsCnvbPctJAFlrDsJwTHO9AAAAAElFTkSuQmCC"
)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def filtered_png(ids: np.ndarray, filter_type: int, alpha: bool = False) -> bytes:
    """An 8-bit RGB(A) PNG of ``ids`` whose rows all use PNG filter ``filter_type`` (0-4)."""
    rgb = np.stack([ids & 255, (ids >> 8) & 255, ids >> 16], -1).astype(np.int16)
    if alpha:  # varying alpha, which must not leak into the ids
        rgb = np.concatenate([rgb, (np.arange(ids.size) % 251).reshape(*ids.shape, 1)], -1)
    left, up, up_left = (np.zeros_like(rgb) for _ in range(3))
    left[:, 1:], up[1:], up_left[1:, 1:] = rgb[:, :-1], rgb[:-1], rgb[:-1, :-1]
    estimate = left + up - up_left
    distances = [abs(estimate - v) for v in (left, up, up_left)]
    paeth = np.where(
        (distances[0] <= distances[1]) & (distances[0] <= distances[2]),
        left,
        np.where(distances[1] <= distances[2], up, up_left),
    )
    predictor = [0, left, up, (left + up) // 2, paeth][filter_type]
    residual = ((rgb - predictor) % 256).astype(np.uint8).reshape(ids.shape[0], -1)
    rows = np.concatenate([np.full((ids.shape[0], 1), filter_type, np.uint8), residual], 1)
    header = struct.pack(">IIBBBBB", ids.shape[1], ids.shape[0], 8, 6 if alpha else 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows.tobytes())),
            chunk(b"IEND", b""),
        ]
    )


def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def reference_ids(png: bytes) -> np.ndarray:
    """What panopticapi reads: PIL's RGB pixels through rgb2id."""
    return rgb2id(np.array(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.uint32))


def random_ids(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    palette = np.array([0, 1, 255, 256, 65535, 65536, 2**24 - 1, 1234567], np.uint32)
    blocks = rng.choice(palette, (height // 8 + 1, width // 8 + 1))
    return np.ascontiguousarray(np.kron(blocks, np.ones((8, 8), np.uint32))[:height, :width])


@pytest.mark.parametrize("compress_level", [0, 1, 9])
def test_rgb_pngs_of_any_compression_and_size(tmp_path, compress_level):
    for height, width in [(1, 1), (7, 3), (97, 131)]:
        ids = random_ids(height, width)
        path = tmp_path / f"{height}x{width}.png"
        path.write_bytes(png_bytes(id_png(ids), compress_level=compress_level))
        np.testing.assert_array_equal(read_segment_ids(path), ids)
        assert read_segment_ids(path).dtype == np.uint32


def test_alpha_palette_grey_and_interlaced_pngs():
    ids = random_ids(20, 30, seed=1)
    rgb = id_png(ids)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(600).reshape(20, 30) % 256).astype(np.uint8)))
    cases = {
        "rgba (alpha is not part of the id)": png_bytes(rgba),
        "palette": png_bytes(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)),
        "grey": png_bytes(rgb.convert("L")),
        "interlaced": INTERLACED_PNG,
    }
    for name, png in cases.items():
        np.testing.assert_array_equal(decode_segment_ids(png), reference_ids(png), err_msg=name)
    np.testing.assert_array_equal(
        decode_segment_ids(cases["rgba (alpha is not part of the id)"]), ids
    )


def test_png_split_over_many_idat_chunks():
    ids = random_ids(64, 64, seed=2)
    png = png_bytes(id_png(ids))
    # Re-chunk the image data into 7-byte IDAT chunks: readers must join them.
    body = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    header = png[: png.index(b"IDAT") - 4]
    chunks = [chunk(b"IDAT", body[i : i + 7]) for i in range(0, len(body), 7)]
    np.testing.assert_array_equal(
        decode_segment_ids(b"".join([header, *chunks, chunk(b"IEND", b"")])), ids
    )


def noise_ids(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**24, (height, width)).astype(np.uint32)


# Widths around the kernel's 8-pixel blocks; flat regions (block fast paths) and noise.
@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("alpha", [False, True])
def test_every_row_filter(filter_type, alpha):
    for height, width in [(1, 1), (3, 7), (5, 8), (9, 9), (6, 17), (13, 131)]:
        for ids in (random_ids(height, width, seed=width), noise_ids(height, width, seed=width)):
            png = filtered_png(ids, filter_type, alpha)
            assert isinstance(open_segment_ids(png), InflatedPng)
            np.testing.assert_array_equal(decode_segment_ids(png), ids)
            np.testing.assert_array_equal(reference_ids(png), ids)  # the encoder is right


def reference_pairs(gt: np.ndarray, pred: np.ndarray) -> dict:
    keys, counts = np.unique(gt.astype(np.uint64) << 32 | pred, return_counts=True)
    return {(int(k >> 32), int(k & 0xFFFFFFFF)): int(c) for k, c in zip(keys, counts)}


def kernel_pairs(gt, pred) -> dict:
    height, width = gt.shape
    sources = [(x.data, x.channels) if isinstance(x, InflatedPng) else x for x in (gt, pred)]
    pair_gt, pair_pred, counts = _pq_kernels.pair_counts(*sources, height, width)
    pairs = zip(*(np.frombuffer(b, t).tolist() for b, t in
                  ((pair_gt, np.uint32), (pair_pred, np.uint32), (counts, np.int64))))  # fmt: skip
    return {(g, p): c for g, p, c in pairs}


def test_pixel_pairs_from_arrays_and_pngs():
    # 61x67: odd sizes; noise gives thousands of distinct pairs (the kernel's table grows).
    for gt, pred in [
        (random_ids(61, 67, seed=3), random_ids(61, 67, seed=4)),
        (noise_ids(61, 67, seed=5), random_ids(61, 67, seed=6)),
    ]:
        expected = reference_pairs(gt, pred)
        gt_png = open_segment_ids(filtered_png(gt, 4))
        pred_png = open_segment_ids(png_bytes(id_png(pred)))  # PIL's own filter choice
        for gt_source in (gt, gt_png):
            for pred_source in (pred, pred_png):
                assert kernel_pairs(gt_source, pred_source) == expected


def test_kernel_input_errors():
    ids = random_ids(4, 5)
    with pytest.raises(TypeError, match="32-bit"):
        _pq_kernels.pair_counts(ids.astype(np.int64), ids, 4, 5)
    with pytest.raises(ValueError, match="has 20 ids, not 3x4"):
        _pq_kernels.pair_counts(ids, ids, 3, 4)
    rows = bytearray(open_segment_ids(filtered_png(ids, 2)).data)
    with pytest.raises(ValueError, match="PNG data has 63 bytes, not the 64"):
        _pq_kernels.pair_counts((bytes(rows[:-1]), 3), ids, 4, 5)
    rows[2 * 16] = 7  # row 2's filter type
    with pytest.raises(ValueError, match="gt_ids: PNG row 2 has unknown filter type 7"):
        _pq_kernels.pair_counts((bytes(rows), 3), ids, 4, 5)


def test_not_a_png_or_damaged_data_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not a PNG"):
        decode_segment_ids(b"GIF89a")
    png = bytearray(filtered_png(random_ids(16, 16), 2))
    idat = png.index(b"IDAT")
    png[idat + 6] ^= 0xFF  # inside the deflate stream
    path = tmp_path / "damaged.png"
    path.write_bytes(png)
    with pytest.raises(ValueError, match=f"{path}: damaged PNG image data"):
        read_segment_ids(path)
