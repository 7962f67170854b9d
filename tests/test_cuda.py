"""CUDA-only behaviour: reduced precision, streams. (Every other test also runs on CUDA when present.)"""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from conftest import MODES, first_and_second_order, random_grid
from grid_encoder import grid_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# Max error relative to the largest magnitude of each result: half keeps ~11 bits, bfloat16 ~8.
REDUCED_TOLERANCE = {torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", MODES)
def test_reduced_precision_matches_float32(dtype, mode, dims):
    spatial, out_spatial = ((16, 16), (8, 8)) if dims == 2 else ((8, 8, 8), (4, 4, 4))
    input = torch.randn(2, 8, *spatial, device="cuda").to(dtype)
    grid = random_grid(2, *out_spatial, dims=dims, dtype=torch.float32, device="cuda").to(dtype)
    low = first_and_second_order(grid_sample, input, grid, mode, "zeros", False)
    high = first_and_second_order(grid_sample, input.float(), grid.float(), mode, "zeros", False)
    for name, a, b in zip(("output", "grad_input", "grad_grid", "d_grad_output", "d_input", "d_grid"), low, high):
        assert a.dtype == dtype, name
        scale = b.abs().max().clamp_min(1e-6)
        error = (a.float() - b).abs().max() / scale
        assert error < REDUCED_TOLERANCE[dtype], f"{name}: relative error {error:.2e}"


def test_float16_forward_matches_torch():
    input = torch.randn(2, 8, 16, 16, device="cuda", dtype=torch.float16)
    grid = random_grid(2, 8, 8, dtype=torch.float16, device="cuda")
    assert_close(grid_sample(input, grid, "bicubic", "border", False),
                 F.grid_sample(input, grid, "bicubic", "border", align_corners=False), rtol=2e-3, atol=2e-3)


def test_runs_on_the_current_stream():
    input = torch.randn(2, 4, 32, 32, device="cuda", requires_grad=True)
    grid = random_grid(2, 16, 16, dtype=torch.float32, device="cuda").requires_grad_()
    expected = torch.autograd.grad(grid_sample(input, grid).square().sum(), (input, grid))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        got = torch.autograd.grad(grid_sample(input, grid).square().sum(), (input, grid))
    torch.cuda.current_stream().wait_stream(stream)
    for a, b in zip(got, expected):
        assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_cuda_matches_cpu_at_second_order():
    input = torch.randn(2, 3, 9, 8, dtype=torch.float64)
    grid = random_grid(2, 6, 5)
    on_cpu = first_and_second_order(grid_sample, input, grid, "bicubic", "reflection", True)
    on_gpu = first_and_second_order(grid_sample, input.cuda(), grid.cuda(), "bicubic", "reflection", True)
    for a, b in zip(on_gpu, on_cpu):
        assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)
