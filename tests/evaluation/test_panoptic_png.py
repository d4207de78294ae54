"""The fast panoptic PNG reader gives the ids of PIL + panopticapi's rgb2id, for any PNG kind."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from panoptic_cases import id_png
from panopticapi.utils import rgb2id
from PIL import Image

from panoptic_zoo.evaluation.panoptic_png import _chunk, decode_segment_ids, read_segment_ids

# A 5x3 RGB PNG with Adam7 interlacing (written by pypng; PIL cannot write interlaced PNGs).
INTERLACED_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAUAAAADCAIAAAGjU2I5AAAAPElEQVR4nGNgZGJmYJ07n+Gt6FcGjql8Ey5IcIdaMwBF"
    "L7/XZeAX45Jg12SwMXuTq3c8SOGsCnvbPctJAFlrDsJwTHO9AAAAAElFTkSuQmCC"
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
    return np.kron(blocks, np.ones((8, 8), np.uint32))[:height, :width]


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
    chunks = [_chunk(b"IDAT", body[i : i + 7]) for i in range(0, len(body), 7)]
    np.testing.assert_array_equal(
        decode_segment_ids(b"".join([header, *chunks, _chunk(b"IEND", b"")])), ids
    )


def test_not_a_png_is_an_error():
    with pytest.raises(ValueError, match="not a PNG"):
        decode_segment_ids(b"GIF89a")
