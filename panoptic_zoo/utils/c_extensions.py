"""
The package's optional C extensions. Each has a NumPy or PyTorch path that gives the same
results, so the package installs and runs without a C compiler; a missing extension (not
built, or ignored with ``PANOPTIC_ZOO_NO_C_EXTENSIONS=1``) is noted once, in one line.
Standard library only: the evaluator's command line loads it without torch.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

__all__ = ["DISABLE_VARIABLE", "load_c_extension"]

logger = logging.getLogger(__name__)

# Set to 1 to run on the NumPy / PyTorch paths even where the C extensions are built (the
# fallback test, or a comparison).
DISABLE_VARIABLE = "PANOPTIC_ZOO_NO_C_EXTENSIONS"

_noted = False


def load_c_extension(name: str) -> ModuleType | None:
    """The compiled module ``name`` (e.g. ``panoptic_zoo.evaluation._pq_kernels``), or None
    where it is not built or ``PANOPTIC_ZOO_NO_C_EXTENSIONS`` is set."""
    global _noted
    disabled = os.environ.get(DISABLE_VARIABLE, "") not in ("", "0")
    if not disabled:
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    if not _noted:
        _noted = True
        reason = f"{DISABLE_VARIABLE} is set" if disabled else f"{name} is not built"
        logger.warning("panoptic_zoo: C extensions not used (%s): running on NumPy/PyTorch paths", reason)
    return None
