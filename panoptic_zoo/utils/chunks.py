"""Row chunks of a bounded size, for per-pixel passes that keep their working set in cache."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["row_chunks"]


def row_chunks(height: int, row_size: int, chunk_size: int) -> Iterator[slice]:
    """
    Slices covering rows ``0 .. height - 1`` in order, each of as many rows of ``row_size``
    elements as fit in ``chunk_size`` elements (at least one row).
    """
    rows = max(1, chunk_size // max(1, row_size))
    for start in range(0, height, rows):
        yield slice(start, min(start + rows, height))
