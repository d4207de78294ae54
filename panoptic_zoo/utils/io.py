"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json"]


def atomic_write(path: str | Path, write: Callable[[IO], Any], mode: str = "wb") -> Path:
    """
    Call ``write(f)`` on a temporary file beside ``path``, flush and fsync it, rename it to
    ``path``, then fsync the directory. Readers see the old file or the complete new one, never a
    partial one, even if the process is killed or the machine loses power mid-write. On an error
    the temporary file is removed and ``path`` is untouched. ``path`` must be on a local
    filesystem (the rename is what makes the write atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # In the same directory: os.replace is atomic only within one filesystem.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # The rename itself is durable only once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``path`` with :func:`atomic_write`."""
    return atomic_write(path, lambda f: json.dump(payload, f, indent=2, sort_keys=True), mode="w")
