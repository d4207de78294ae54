"""Row chunks: in order, covering every row once, bounded in size, at least one row each."""

from panoptic_zoo.utils.chunks import row_chunks


def test_row_chunks_cover_the_rows_within_the_bound():
    assert list(row_chunks(10, 3, 7)) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8),
                                          slice(8, 10)]  # fmt: skip
    assert list(row_chunks(5, 3, 100)) == [slice(0, 5)]
    assert list(row_chunks(3, 50, 7)) == [slice(0, 1), slice(1, 2), slice(2, 3)]  # rows > bound
    assert list(row_chunks(4, 0, 7)) == [slice(0, 4)]  # empty rows
    assert list(row_chunks(0, 3, 7)) == []
