"""Separable window pooling against PyTorch's direct kernels."""

import pytest
import torch
from torch.nn import functional as F

from panoptic_zoo.layers import window_max, window_mean


@pytest.mark.parametrize("kernel_size", [1, 3, 7, 41])
def test_window_max_is_max_pool_exactly(kernel_size):
    torch.manual_seed(kernel_size)
    # Odd sizes, a map smaller than the window, batched and unbatched, ties (rounded values).
    for shape in [(2, 3, 37, 53), (1, 9, 12), (1, 1, 5, 3)]:
        x = (torch.randn(shape) * 4).round()
        expected = F.max_pool2d(x, kernel_size, stride=1, padding=(kernel_size - 1) // 2)
        assert torch.equal(window_max(x, kernel_size), expected)


def test_window_max_needs_an_odd_window():
    with pytest.raises(ValueError, match="odd kernel_size"):
        window_max(torch.zeros(1, 1, 4, 4), 4)


@pytest.mark.parametrize("kernel_size", [(1, 1), (3, 5), (40, 40), (11, 53), (41, 53)])
def test_window_mean_is_avg_pool_to_rounding(kernel_size):
    torch.manual_seed(0)
    for x in [torch.randn(2, 5, 41, 53), torch.randn(3, 41, 53) + 100]:  # batched, unbatched
        expected = F.avg_pool2d(x, kernel_size, stride=1)
        torch.testing.assert_close(window_mean(x, kernel_size), expected, rtol=1e-5, atol=1e-5)


def test_window_mean_is_exact_for_small_or_whole_map_windows():
    x = torch.randn(1, 4, 41, 53)
    for kernel_size in [(4, 4), (10, 10), (41, 53)]:
        assert torch.equal(window_mean(x, kernel_size), F.avg_pool2d(x, kernel_size, stride=1))
