"""
Helpers for the fuzz tests (tests/data/test_fuzz_*.py): hypothesis settings, encoders of valid,
odd and broken image files, and a tally that checks and counts each case's outcome.

Every fuzz case must end in one of two ways: the input is mapped (and the test checks the result
against an oracle: no silently wrong label), or a *clear* error is raised: one of
:data:`CLEAR_ERRORS` (or the test module's own ``CLEAR_ERRORS``), whose message names the
offending file. Anything else (another exception
type, a message without the file) fails the test.

``PANOPTIC_ZOO_FUZZ_EXAMPLES=N`` runs N random (not derandomized) cases per test instead of the
fixed, reproducible default set.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable

import numpy as np
import pytest
from detectron2.data.detection_utils import SizeMismatchError
from hypothesis import HealthCheck, settings
from PIL import Image

from panoptic_zoo.data.datasets import AnnotationError

CLEAR_ERRORS = (AnnotationError, SizeMismatchError, FileNotFoundError)

_EXAMPLES = os.environ.get("PANOPTIC_ZOO_FUZZ_EXAMPLES")


def fuzz_settings(default_examples: int):
    return settings(
        max_examples=int(_EXAMPLES) if _EXAMPLES else default_examples,
        derandomize=not _EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class FuzzTally:
    """Counts the outcomes of the fuzz cases of one test module and checks each error."""

    def __init__(self, clear_errors: tuple[type[BaseException], ...] = CLEAR_ERRORS):
        self.clear_errors = clear_errors
        self.outcomes: Counter[str] = Counter()

    def expect(self, expected: str, run: Callable[[], object], files: Iterable[str]):
        """
        Run one case. ``expected``: "ok" (must succeed), "error" (must raise a clear error) or
        "either". Returns run()'s result, or None after a clear error.
        """
        try:
            result = run()
        except self.clear_errors as error:
            message = str(error)
            assert any(str(f) in message for f in files), f"error names no input file: {message}"
            assert expected != "ok", f"valid input rejected: {type(error).__name__}: {message}"
            self.outcomes[f"clear error ({type(error).__name__})"] += 1
            return None
        assert expected != "error", "invalid input was accepted"
        self.outcomes["accepted and checked"] += 1
        return result

    def summary(self) -> str:
        total = sum(self.outcomes.values())
        parts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.outcomes.items()))
        return f"{total} cases: {parts}"


@pytest.fixture(scope="module")
def fuzz_tally(request):
    """
    One :class:`FuzzTally` per module (clear errors: the module's ``CLEAR_ERRORS`` if it has
    them); its summary is printed in pytest's report.
    """
    tally = FuzzTally(getattr(request.module, "CLEAR_ERRORS", CLEAR_ERRORS))
    yield tally
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
            reporter.write_line(f"\nfuzz {request.module.__name__}: {tally.summary()}")


# ----------------------------------------------------------------------------------------------
# Image files


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def rgb48_png(rgb: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one) holding ``rgb * 257``."""
    height, width = rgb.shape[:2]
    samples = (rgb.astype(">u2") * 257).reshape(height, width * 3)
    raw = b"".join(b"\x00" + row.tobytes() for row in samples)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))  # fmt: skip


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` whose IHDR claims another size (with a valid CRC): a decompression bomb header."""
    assert png[12:16] == b"IHDR"
    header = struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png_chunk(b"IHDR", header) + png[33:]


# EXIF orientation -> the transpose that turns the displayed image into the stored one (the
# inverse of what exif_transpose applies).
STORED_FROM_DISPLAYED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def with_exif_orientation(displayed: Image.Image, orientation: int) -> bytes:
    """A PNG that shows ``displayed`` once its EXIF orientation is applied."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(displayed.transpose(STORED_FROM_DISPLAYED[orientation]), "PNG", exif=exif)


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([(ids >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8)


def corrupt(data: bytes, how: str, fraction: float, seed: int) -> bytes:
    """Truncated at ``fraction`` of its length, or with a few bytes flipped."""
    if how == "truncated":
        return data[: int(len(data) * fraction)]
    rng = np.random.default_rng(seed)
    damaged = bytearray(data)
    for position in rng.integers(0, len(data), size=1 + seed % 4):
        damaged[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(damaged)
