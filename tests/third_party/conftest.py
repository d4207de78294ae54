"""
The ``patched_detectron2`` marker: a test of what only the patched, pure-Python Detectron2 v0.6
build (third_party/detectron2) does. Such tests skip when an upstream source build with compiled
ops (``detectron2._C``) is installed instead, as ``scripts/setup.sh`` makes with
``PANOPTIC_ZOO_DETECTRON2_SRC``.
"""

from __future__ import annotations

import pytest

MARKER = "patched_detectron2"

try:
    import detectron2._C  # noqa: F401

    HAS_COMPILED_OPS = True
except ImportError:
    HAS_COMPILED_OPS = False


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}: tests the patched Detectron2 v0.6 build; skipped on a source build"
    )


def pytest_runtest_setup(item):
    if HAS_COMPILED_OPS and item.get_closest_marker(MARKER):
        pytest.skip(
            "detectron2._C imports: an upstream source build (with compiled ops) is installed, "
            "not the patched pure-Python build this test is about"
        )


@pytest.fixture
def compiled_detectron2() -> bool:
    """Whether the installed Detectron2 has its compiled ops (an upstream source build)."""
    return HAS_COMPILED_OPS
