"""Tensors of more than 2^31 elements on the GPU (opt-in: a peak of 47 GiB of GPU memory, and a minute).

    GRID_ENCODER_TEST_HUGE=1 python -m pytest tests/test_huge.py

An input (1, 64, 5800, 5800) and an output (1, 64, 1, 33.6M): 2.15e9 elements each. Most points sample the
top of the image; the last ones sample only the bottom rows, where input offsets pass 2^31, and their outputs
lie past 2^31 as well. Those outputs, their grid gradients and the input gradient on the bottom rows (which no
other point touches) are checked against the reference run on the bottom rows alone.
"""
import os

import pytest
import torch
from torch.testing import assert_close

from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference

pytestmark = pytest.mark.skipif(
    os.environ.get("GRID_ENCODER_TEST_HUGE") != "1" or not torch.cuda.is_available()
    or torch.cuda.get_device_properties(0).total_memory < 60 * 2 ** 30,
    reason="opt-in (GRID_ENCODER_TEST_HUGE=1); needs a GPU with 60 GB or more (the peak is 47 GiB)")

CHANNELS, SIZE, POINTS = 64, 5800, 33_600_000
BOTTOM, CHECKED = 5700, 100_000  # rows [BOTTOM, SIZE) are read by the last CHECKED points only
CROP = SIZE - BOTTOM


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_more_than_2_to_the_31_elements(mode):
    assert CHANNELS * SIZE * SIZE > 2 ** 31 and CHANNELS * POINTS > 2 ** 31
    input = torch.randn(1, SIZE, SIZE, CHANNELS, device="cuda").permute(0, 3, 1, 2).requires_grad_()
    # Pixel coordinates 0.1 to 0.9 px past a whole number: bilinear grid gradients jump at whole numbers.
    rows = torch.cat([torch.randint(0, BOTTOM - 100, (POINTS - CHECKED,), device="cuda"),
                      torch.randint(BOTTOM + 10, SIZE - 10, (CHECKED,), device="cuda")])
    rows = rows + 0.1 + 0.8 * torch.rand(POINTS, device="cuda")
    columns = torch.randint(0, SIZE - 1, (POINTS,), device="cuda") + 0.1 + 0.8 * torch.rand(POINTS, device="cuda")
    grid = (torch.stack([columns, rows], -1) * (2 / (SIZE - 1)) - 1).view(1, 1, POINTS, 2).requires_grad_()
    out = grid_sample(input, grid, mode, "zeros", True)
    grad_out = torch.randn_like(out)
    grad_input, grad_grid = torch.autograd.grad(out, (input, grid), grad_out)
    got = (out[..., -CHECKED:].double(), grad_grid[:, :, -CHECKED:].double(), grad_input[:, :, BOTTOM:].double())
    crop = input.detach()[:, :, BOTTOM:].double()
    grad_out = grad_out[..., -CHECKED:].double()
    checked = grid.detach()[:, :, -CHECKED:]
    del input, out, grad_input, grad_grid, grid

    # The pixel coordinates the kernels computed (float32, align_corners=True), moved onto the crop.
    pixel = (((checked + 1) / 2) * (SIZE - 1)).double() - torch.tensor([0.0, BOTTOM], device="cuda")
    crop_grid = (2 * pixel / torch.tensor([SIZE - 1.0, CROP - 1.0], device="cuda") - 1).requires_grad_()
    crop.requires_grad_()
    expected_out = grid_sample_reference(crop, crop_grid, mode, "zeros", True)
    expected_grad_input, expected_grad_grid = torch.autograd.grad(expected_out, (crop, crop_grid), grad_out)
    # d/d grid scales with the extent of the axis a grid value spans, and the full image has more rows.
    expected_grad_grid = expected_grad_grid * torch.tensor([1.0, (SIZE - 1) / (CROP - 1)], device="cuda")
    for name, a, b in zip(("output", "grad_grid", "grad_input"), got,
                          (expected_out, expected_grad_grid, expected_grad_input)):
        scale = b.abs().max().item()
        assert_close(a, b, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{name}: {m}")
