"""Every second-order term equals the pure-PyTorch reference's; finite differences agree."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import (GRADCHECK_NONDET_TOL, REORDERED_SUMS, RESULT_NAMES, SETTINGS, SETTING_IDS, first_and_second_order,
                     off_edge_grid, random_grid)
from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference



def assert_all_close(ours, theirs, **tol):
    for name, a, b in zip(RESULT_NAMES, ours, theirs):
        assert_close(a, b, msg=lambda m: f"{name}: {m}", **tol)


@pytest.mark.parametrize("cotangents", ["both", "grad_grad_input", "grad_grad_grid"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_second_order_matches_reference(device, dims, mode, padding, align, cotangents):
    if dims == 2:
        input, grid = torch.randn(2, 3, 6, 7, dtype=torch.float64, device=device), random_grid(2, 4, 5, device=device)
    else:
        input = torch.randn(2, 2, 4, 5, 6, dtype=torch.float64, device=device)
        grid = random_grid(2, 2, 3, 3, dims=3, device=device)
    flags = dict(ggi=cotangents != "grad_grad_grid", ggg=cotangents != "grad_grad_input")
    ours = first_and_second_order(grid_sample, input, grid, mode, padding, align, **flags)
    theirs = first_and_second_order(grid_sample_reference, input, grid, mode, padding, align, **flags)
    assert_all_close(ours, theirs, **REORDERED_SUMS)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_grid_grid_term_is_present(device, mode):
    """d grid from grad_grad_grid alone is the grid-grid term (the mixed derivative of the bilinear
    weights, all three second derivatives for bicubic). It is not small, and it is ours exactly."""
    input = torch.randn(1, 4, 6, 6, dtype=torch.float64, device=device)
    grid = random_grid(1, 8, 8, device=device, reach=0.9)
    ours = first_and_second_order(grid_sample, input, grid, mode, "zeros", True, ggi=False)
    theirs = first_and_second_order(grid_sample_reference, input, grid, mode, "zeros", True, ggi=False)
    assert theirs[5].abs().max() > 1.0
    assert_close(ours[5], theirs[5], **REORDERED_SUMS)


def test_reference_second_order_matches_torch():
    """The oracle itself agrees with torch's composite double backward, where torch has one."""
    input = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    grid = random_grid(2, 4, 5)
    try:
        torch_result = first_and_second_order(F.grid_sample, input, grid, "bicubic", "reflection", False)
    except RuntimeError as error:
        pytest.skip(f"this torch has no double backward for grid_sample ({error})")
    ref_result = first_and_second_order(grid_sample_reference, input, grid, "bicubic", "reflection", False)
    assert_all_close(ref_result, torch_result, **REORDERED_SUMS)


def test_eikonal_step(device):
    """The SDF pattern: train through the norm of the grid gradient."""
    def eikonal(fn, features, points):
        features = features.detach().requires_grad_()
        points = points.detach().requires_grad_()
        sdf = fn(features, points, "bilinear", "border", True).sum(1)
        (d_points,) = torch.autograd.grad(sdf.sum(), points, create_graph=True)
        loss = ((d_points.norm(dim=-1) - 1) ** 2).sum() + sdf.square().sum()
        return torch.autograd.grad(loss, (features, points))

    features = torch.randn(2, 4, 16, 16, dtype=torch.float64, device=device)
    points = random_grid(2, 1, 64, device=device, reach=1.0)
    for a, b in zip(eikonal(grid_sample, features, points), eikonal(grid_sample_reference, features, points)):
        assert_close(a, b, **REORDERED_SUMS)


GRADCHECK_CASES = [(m, p, a) for i, (m, p, a) in enumerate(SETTINGS) if i % 2 == 0] + [
    ("bilinear", "zeros", False), ("bicubic", "reflection", True)]


GRADCHECK_CASES_3D = [("bilinear", "zeros", True), ("bilinear", "reflection", False), ("nearest", "border", True),
                      ("bicubic", "border", False)]


@pytest.mark.parametrize("dims,mode,padding,align", [(2, *case) for case in GRADCHECK_CASES]
                         + [(3, *case) for case in GRADCHECK_CASES_3D])
def test_gradcheck_and_gradgradcheck(device, dims, mode, padding, align):
    spatial, points = ((4, 5), (1, 3, 3)) if dims == 2 else ((3, 4, 5), (1, 2, 2, 2))
    input = torch.randn(1, 2, *spatial, dtype=torch.float64, device=device, requires_grad=True)
    grid = off_edge_grid(points, spatial, align, device=device).requires_grad_()
    fn = lambda x, g: grid_sample(x, g, mode, padding, align)
    assert torch.autograd.gradcheck(fn, (input, grid), nondet_tol=GRADCHECK_NONDET_TOL)
    assert torch.autograd.gradgradcheck(fn, (input, grid), nondet_tol=GRADCHECK_NONDET_TOL)


class MaskRecorder(TorchDispatchMode):
    """Records the output masks the backward operators are called with, from Python or from C++ autograd."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name in ("grid_encoder::grid_sample_backward", "grid_encoder::grid_sample_double_backward"):
            self.masks.append((name.split("::")[1], list(args[-1])))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("features_are_leaf", [True, False])
def test_eikonal_first_half_computes_only_the_grid_gradient(features_are_leaf):
    """torch.autograd.grad(out, grid, create_graph=True) needs no input gradient: the kernels are not asked for
    it, whether input is a leaf or computed by another op; the results stay right."""
    leaf = torch.randn(1, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    grid = random_grid(1, 4, 5).requires_grad_()
    results = []
    recorder = MaskRecorder()
    for sample in (grid_sample, grid_sample_reference):
        with recorder:
            features = leaf if features_are_leaf else leaf * 2
            out = sample(features, grid, "bilinear", "zeros", True)
            (grad_grid,) = torch.autograd.grad(out, grid, torch.ones_like(out), create_graph=True)
            results.append(torch.autograd.grad(((grad_grid.norm(dim=-1) - 1) ** 2).sum(), (leaf, grid)))
    assert recorder.masks == [("grid_sample_backward", [False, True]),
                              ("grid_sample_double_backward", [False, True, True])]
    for a, b in zip(*results):
        assert_close(a, b, **REORDERED_SUMS)
