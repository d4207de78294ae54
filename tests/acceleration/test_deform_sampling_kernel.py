"""The deformable convolution's C kernel (``_deform_sampling.c``) against torchvision's kernel."""

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d

from panoptic_zoo.acceleration import deform_conv
from panoptic_zoo.acceleration.deform_conv import sampled_deform_conv3x3
from panoptic_zoo.acceleration.kernels import DEFORM_SAMPLING as _deform_sampling

pytestmark = pytest.mark.skipif(_deform_sampling is None, reason="the C kernel is not built")


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 9, 13), (1, 3, 1, 7), (1, 4, 6, 1), (2, 6, 31, 17)])
@pytest.mark.parametrize("chunk_pixels", [None, 1, 7])
def test_sampled_path_is_torchvision_deform_conv(
    shape, modulated, chunk_pixels, c_kernels, monkeypatch
):
    batch, channels, height, width = shape
    if chunk_pixels is not None:  # chunks that end inside image rows, and 1-pixel chunks
        monkeypatch.setattr(deform_conv, "_COLUMN_FLOATS", chunk_pixels * 9 * channels)
    torch.manual_seed(sum(shape))
    x = torch.randn(shape)
    # Offsets up to a few pixels: taps land between pixels, on borders and outside the image.
    offset = torch.randn(batch, 18, height, width) * 3
    offset[0, 0, 0, 0] = 0.0  # an integer position: a corner weight of exactly 1
    offset[0, 1, 0, 0] = -1.5  # x at -1.5 + (0 - 1): more than a pixel outside, reads zero
    weight, bias = torch.randn(7, channels, 3, 3), torch.randn(7)
    mask = torch.rand(batch, 9, height, width) if modulated else None
    expected = deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    got = sampled_deform_conv3x3(x, offset, weight, bias, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        sampled_deform_conv3x3(x, offset, weight, None, mask), expected - bias.view(1, -1, 1, 1),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    # Channels-last input (what a previous deformable layer returns) reads the same.
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        sampled_deform_conv3x3(channels_last, offset, weight, bias, mask), expected,
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def test_sampled_columns_by_hand(c_kernels):
    """Channel values 10 * y + x + 100 * channel on a 2 x 3 image; the columns of pixel (0, 1)."""
    ys, xs = np.mgrid[0:2, 0:3].astype(np.float32)
    image = np.stack([10 * ys + xs, 10 * ys + xs + 100], axis=-1)  # [H, W, C=2]
    offset = np.zeros((18, 2, 3), np.float32)
    offset[8, 0, 1], offset[9, 0, 1] = 0.25, 0.5  # tap 4 (the centre) at (0.25, 1.5)
    offset[16, 0, 1] = 0.5  # tap 8, (1, 1) from the pixel: y = 1.5, between the last row and
    # the outside, whose corners read zero
    offset[1, 0, 1] = np.nan  # tap 0: a NaN position samples zero
    mask = np.ones((9, 2, 3), np.float32)
    mask[4, 0, 1] = 0.5
    columns = np.full((1, 9 * 2), -7.0, np.float32)
    _deform_sampling.sample_columns(image, offset, mask, columns, 1, 2)  # a thread without pixels
    taps = columns.reshape(9, 2)
    # Centre at (0.25, 1.5): rows 0 and 1 weigh 0.75 and 0.25, columns 1 and 2 a half each.
    centre = 0.75 * (0.5 * 1 + 0.5 * 2) + 0.25 * (0.5 * 11 + 0.5 * 12)
    np.testing.assert_allclose(taps[4], [0.5 * centre, 0.5 * (centre + 100)], rtol=1e-6)
    np.testing.assert_allclose(taps[8], [0.5 * 12, 0.5 * 112], rtol=1e-6)
    np.testing.assert_array_equal(taps[0], [0, 0])  # NaN
    np.testing.assert_array_equal(taps[1], [0, 0])  # (-1, 1): a whole pixel above the image
    np.testing.assert_array_equal(taps[7], [11, 111])  # (1, 1), no offset


def test_sampled_columns_reject_bad_buffers():
    image = np.zeros((2, 3, 4), np.float32)
    offset = np.zeros((18, 2, 3), np.float32)
    columns = np.zeros((6, 36), np.float32)
    with pytest.raises(ValueError, match=r"offset must be \[18, H, W\]"):
        _deform_sampling.sample_columns(image, offset[:, :1].copy(), None, columns, 0, 1)
    with pytest.raises(ValueError, match=r"columns must be \[n, 9 \* C\]"):
        _deform_sampling.sample_columns(image, offset, None, columns, 1, 1)  # pixels 1..6 of 6
    with pytest.raises(ValueError, match="input must be a C-contiguous float32"):
        _deform_sampling.sample_columns(image.astype(np.float64), offset, None, columns, 0, 1)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        _deform_sampling.sample_columns(image, offset, None, columns, 0, 0)
    with pytest.raises(ValueError, match="float32 CPU tensors; x is torch.float64"):
        sampled_deform_conv3x3(
            torch.zeros(1, 4, 2, 3, dtype=torch.float64), torch.zeros(1, 18, 2, 3),
            torch.zeros(5, 4, 3, 3), None, None,
        )  # fmt: skip
