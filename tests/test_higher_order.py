"""Third and fourth order: every derivative equals the reference's (which autograd differentiates
directly), for every mode, padding and dimensionality."""
import pytest
import torch
from torch.testing import assert_close

from helpers import (GRADCHECK_NONDET_TOL, REORDERED_SUMS, SETTINGS, SETTING_IDS, grads_or_zeros, off_edge_grid,
                     random_grid)
from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference


def derivatives(fn, input, grid, settings, order, seed=0):
    """Derivatives of orders 1..order of fn with respect to every tensor of the order before, each
    contracted with a random cotangent (the same for any fn given the same seed)."""
    gen = torch.Generator().manual_seed(seed)

    def cotangent(like):
        return torch.randn(like.shape, generator=gen, dtype=torch.float64).to(like.device)

    leaves = [input.detach().requires_grad_(), grid.detach().requires_grad_()]
    out = fn(*leaves, *settings)
    grad_out = cotangent(out).requires_grad_()
    variables = [grad_out] + leaves
    current = grads_or_zeros(out, leaves, grad_out, create_graph=True)
    results = list(current)
    for _ in range(order - 1):
        loss = sum((g * cotangent(g)).sum() for g in current)
        if not loss.requires_grad:  # nothing left to differentiate (nearest): all zero from here on
            current = [torch.zeros_like(v) for v in variables]
        else:
            current = grads_or_zeros(loss, variables, None, create_graph=True)
        results += current
    return results


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("mode,padding,align", SETTINGS, ids=SETTING_IDS)
def test_third_order_matches_reference(device, dims, mode, padding, align):
    input_shape, out_shape = ((2, 2, 5, 6), (2, 3, 4)) if dims == 2 else ((1, 2, 3, 4, 5), (1, 2, 2, 3))
    input = torch.randn(input_shape, dtype=torch.float64, device=device)
    grid = random_grid(*out_shape, dims=dims, device=device)
    ours = derivatives(grid_sample, input, grid, (mode, padding, align), order=3)
    theirs = derivatives(grid_sample_reference, input, grid, (mode, padding, align), order=3)
    assert len(ours) == 2 + 3 + 3
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, **REORDERED_SUMS, msg=lambda m: f"derivative {i}: {m}")


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_fourth_order_matches_reference(device, mode):
    input = torch.randn(1, 2, 4, 5, dtype=torch.float64, device=device)
    grid = random_grid(1, 2, 3, device=device)
    ours = derivatives(grid_sample, input, grid, (mode, "border", False), order=4)
    theirs = derivatives(grid_sample_reference, input, grid, (mode, "border", False), order=4)
    for a, b in zip(ours, theirs):
        assert_close(a, b, **REORDERED_SUMS)
    assert max(t.abs().max() for t in ours[-3:]) > 0


def test_third_order_gradcheck(device):
    """Finite differences of the second-order outputs (the double backward op is differentiable)."""
    input = torch.randn(1, 2, 4, 5, dtype=torch.float64, device=device, requires_grad=True)
    grid = off_edge_grid((1, 2, 3), (4, 5), False, device=device).requires_grad_()
    grad_output = torch.randn(1, 2, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    grad_grad_input = torch.randn_like(input, requires_grad=True)
    grad_grad_grid = torch.randn_like(grid, requires_grad=True)
    op = torch.ops.grid_encoder.grid_sample_double_backward
    fn = lambda ggi, ggg, go, x, g: op(ggi, ggg, go, x, g, 2, 2, False, [True, True, True])
    assert torch.autograd.gradcheck(fn, (grad_grad_input, grad_grad_grid, grad_output, input, grid),
                                    nondet_tol=GRADCHECK_NONDET_TOL)
