"""3-D volumes (5-D input): trilinear and nearest equal torch; tricubic and every second-order term
equal the reference; finite differences agree."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from conftest import (GRADCHECK_NONDET_TOL, PADDINGS, SETTINGS, SETTING_IDS, first_and_second_order, first_order,
                      off_edge_grid, random_grid)
from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference

TIGHT = dict(rtol=1e-10, atol=1e-10)
TORCH_SETTINGS = [s for s in SETTINGS if s[0] != "bicubic"]
TORCH_IDS = [i for s, i in zip(SETTINGS, SETTING_IDS) if s[0] != "bicubic"]


@pytest.mark.parametrize("mode,padding,align", TORCH_SETTINGS, ids=TORCH_IDS)
def test_first_order_matches_torch(device, mode, padding, align):
    input = torch.randn(2, 3, 4, 5, 6, dtype=torch.float64, device=device)
    grid = random_grid(2, 3, 4, 5, dims=3, device=device)
    grad_output = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64, device=device)
    ours = first_order(grid_sample, input, grid, grad_output, mode, padding, align)
    theirs = first_order(F.grid_sample, input, grid, grad_output, mode, padding, align)
    for name, a, b in zip(("output", "grad_input", "grad_grid"), ours, theirs):
        assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("layout", ["channels_last_3d", "sliced"])
def test_non_contiguous_volume(device, layout):
    base = torch.randn(2, 4, 6, 7, 8, dtype=torch.float64, device=device)
    input = base.to(memory_format=torch.channels_last_3d) if layout == "channels_last_3d" else base[:, 1:, ::2]
    grid = random_grid(2, 6, 3, 4, dims=3, device=device)[:, ::2]
    grad_output = torch.randn(input.shape[0], input.shape[1], *grid.shape[1:-1], dtype=torch.float64,
                              device=device)
    ours = first_order(grid_sample, input, grid, grad_output, "bilinear", "border", False)
    theirs = first_order(F.grid_sample, input, grid, grad_output, "bilinear", "border", False)
    for a, b in zip(ours, theirs):
        assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", PADDINGS)
def test_tricubic_reference_reduces_to_torch_bicubic(padding):
    """A volume of depth 1 sampled at z = 0 with align_corners=True is the 2-D image: the tricubic
    reference (and so grid_encoder) gives torch's bicubic there, with the same first derivatives."""
    image = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    grid_2d = random_grid(2, 4, 5)
    grid_3d = torch.cat([grid_2d, torch.zeros_like(grid_2d[..., :1])], -1)
    grad_output = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = first_order(F.grid_sample, image, grid_2d, grad_output, "bicubic", padding, True)
    for fn in (grid_sample_reference, grid_sample):
        got = first_order(fn, image.unsqueeze(2), grid_3d.unsqueeze(1), grad_output.unsqueeze(2), "bicubic",
                          padding, True)
        assert_close(got[0][:, :, 0], expected[0], rtol=1e-12, atol=1e-12)
        assert_close(got[1][:, :, 0], expected[1], rtol=1e-12, atol=1e-12)
        assert_close(got[2][:, 0, ..., :2], expected[2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_second_order_matches_reference(device, mode, padding, align):
    input = torch.randn(2, 2, 4, 5, 6, dtype=torch.float64, device=device)
    grid = random_grid(2, 2, 3, 3, dims=3, device=device)
    ours = first_and_second_order(grid_sample, input, grid, mode, padding, align)
    theirs = first_and_second_order(grid_sample_reference, input, grid, mode, padding, align)
    for name, a, b in zip(("output", "grad_input", "grad_grid", "d_grad_output", "d_input", "d_grid"), ours,
                          theirs):
        assert_close(a, b, msg=lambda m: f"{name}: {m}", **TIGHT)


@pytest.mark.parametrize("mode,padding,align", [("bilinear", "zeros", True), ("bilinear", "reflection", False),
                                                ("nearest", "border", True), ("bicubic", "border", False)])
def test_gradcheck_and_gradgradcheck(device, mode, padding, align):
    input = torch.randn(1, 2, 3, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    grid = off_edge_grid((1, 2, 2, 2), (3, 4, 5), align, device=device).requires_grad_()
    fn = lambda x, g: grid_sample(x, g, mode, padding, align)
    assert torch.autograd.gradcheck(fn, (input, grid), nondet_tol=GRADCHECK_NONDET_TOL)
    assert torch.autograd.gradgradcheck(fn, (input, grid), nondet_tol=GRADCHECK_NONDET_TOL)
