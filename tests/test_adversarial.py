"""Adversarial grids for every mode, padding and dimensionality through the second order: NaN, +-inf, 1e30,
points exactly on cell edges and on the borders, size-1 axes.

Results must be finite; where the grid is finite and moderate they must match the reference. On a GPU,
running this file under compute-sanitizer checks the kernels' memory accesses on the same inputs:
    compute-sanitizer --tool memcheck --error-exitcode 1 python -m pytest tests/test_adversarial.py -k cuda
"""
import math

import pytest
import torch
from torch.testing import assert_close

from helpers import MODES, PADDINGS, REORDERED_SUMS, first_and_second_order
from grid_encoder import grid_sample
from grid_encoder.reference import grid_sample_reference

SPATIAL = {2: [(1, 1), (1, 5), (4, 1), (3, 4)], 3: [(1, 1, 1), (1, 3, 1), (2, 3, 4)]}
NON_FINITE = [math.nan, math.inf, -math.inf, 1e30, -1e30, 3e9, -3e9]
NAMES = ("output", "grad_input", "grad_grid", "d_grad_output", "d_input", "d_grid")


def edge_values(size, align_corners):
    """Grid values that land exactly on pixel centres, cell borders, the input's borders and beyond."""
    if align_corners:
        pixels = [float(i) for i in range(size)] + [i + 0.5 for i in range(-1, size)]
        values = [2 * x / (size - 1) - 1 for x in pixels] if size > 1 else []
    else:
        pixels = [i - 0.5 for i in range(size + 1)] + [float(i) for i in range(size)]
        values = [(2 * x + 1) / size - 1 for x in pixels]
    return torch.tensor(values + [-1.0, 0.0, 1.0, -1.5, 1.5, -3.0, 3.0], dtype=torch.float64)


def adversarial_grid(spatial, align_corners, points, non_finite, device):
    """Grid (1, points, 1, dims): each component drawn from the edge values of its axis; with `non_finite`,
    every third point also gets one of NON_FINITE in a random component."""
    dims = len(spatial)
    components = []
    for e in range(dims):  # grid axis e follows input dimension -1 - e
        values = edge_values(spatial[-1 - e], align_corners)
        components.append(values[torch.randint(len(values), (points,))])
    grid = torch.stack(components, -1)
    if non_finite:
        bad = torch.tensor(NON_FINITE, dtype=torch.float64)
        rows = torch.arange(0, points, 3)
        grid[rows, torch.randint(dims, (len(rows),))] = bad[torch.randint(len(bad), (len(rows),))]
    return grid.reshape(1, points, *([1] * (dims - 1)), dims).to(device)


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims", [2, 3])
def test_grids_on_edges_and_borders_match_the_reference(device, dims, mode, padding, align_corners):
    """Exactly on cell edges the grid derivatives are one-sided, and the side can differ between two
    correct implementations by one rounding; the output and grad_input are continuous there and must match."""
    for spatial in SPATIAL[dims]:
        input = torch.randn(1, 8, *spatial, dtype=torch.float64, device=device)
        grid = adversarial_grid(spatial, align_corners, 96, False, device)
        ours = first_and_second_order(grid_sample, input, grid, mode, padding, align_corners)
        theirs = first_and_second_order(grid_sample_reference, input, grid, mode, padding, align_corners)
        for name, value in zip(NAMES, ours):
            assert torch.isfinite(value).all(), f"{spatial}: {name} is not finite"
        for name, a, b in list(zip(NAMES, ours, theirs))[:2]:
            assert_close(a, b, **REORDERED_SUMS, msg=lambda m: f"{spatial}, {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims", [2, 3])
def test_non_finite_and_huge_grid_values_give_finite_results(device, dims, mode, padding, align_corners, dtype):
    for spatial in SPATIAL[dims]:
        input = torch.randn(1, 8, *spatial, dtype=dtype, device=device)
        grid = adversarial_grid(spatial, align_corners, 96, True, device).to(dtype)
        results = first_and_second_order(grid_sample, input, grid, mode, padding, align_corners)
        for name, value in zip(NAMES, results):
            assert torch.isfinite(value).all(), f"{spatial}: {name} is not finite"
